"""evaluate's generation and memorization sections: which images are compared, on which features.

- real reference set: a seeded random subset of the split (eval.max_real; null = all of it), never
  "the first N ids in sorted order", which would be one arbitrary slice of the data;
- generated set: every sample PNG, with the class each was drawn for (samples.json);
- set metrics (metrics.distribution): FID (+ FID-infinity) / KID / precision / recall with n on both
  sides, extractor, intervals, overall and, for class-conditional samples, per class (classes with
  fewer than 50 real images skipped and listed);
- memorization (metrics.memorization): nearest training image of every sample in code space (always)
  and in the extractor's feature space (when there is an extractor), against test-to-train.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.utils import make_grid

from lesion_lightning.data.generated import SamplesFolder
from lesion_lightning.data.views import VIEW_NAMES, apply_view
from lesion_lightning.metrics.distribution import per_class, set_metrics, skipped_classes
from lesion_lightning.metrics.generation import extract_features, read_images
from lesion_lightning.metrics.memorization import (
    closest_pairs,
    memorization_summary,
    nearest_euclidean,
    nearest_hamming,
)
from lesion_lightning.utils.io import save_png

log = logging.getLogger(__name__)


def real_subset(num_images: int, max_real: int | None, seed: int) -> np.ndarray:
    """Rows of the real split to compare with: all of them, or a seeded random `max_real` (sorted)."""
    if max_real is None or max_real >= num_images:
        return np.arange(num_images)
    if max_real < 1:
        raise ValueError(f"eval.max_real must be >= 1 or null (the whole split), got {max_real}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_images, size=max_real, replace=False))


def sample_class_indices(
    samples_dir: str | Path, class_names: list[str], num_files: int
) -> np.ndarray | None:
    """The class index each sample was drawn for (its samples.json), or None for unconditional samples
    (or a bare folder of PNGs without samples.json)."""
    if not SamplesFolder.present(samples_dir):
        return None
    folder = SamplesFolder.read(samples_dir)
    if len(folder.files) != num_files:
        raise ValueError(
            f"{samples_dir}/samples.json records {len(folder.files)} samples for {num_files} sample files"
        )
    return folder.class_indices(class_names)


def _loader(dataset, rows: np.ndarray, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        Subset(dataset, rows.tolist()), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )


def set_metric_options(eval_cfg, seed: int, device: torch.device | str, extractor_name: str) -> dict:
    """set_metrics' keyword arguments from the `eval` config group (conf/eval/default.yaml documents them)."""
    return {
        "feature_extractor": extractor_name,
        "kid_subset_size": int(eval_cfg.kid_subset_size),
        "kid_subsets": int(eval_cfg.kid_subsets),
        "num_bootstrap": int(eval_cfg.kid_bootstrap),
        "fid_splits": int(eval_cfg.fid_splits),
        "prc_k": int(eval_cfg.prc_k),
        "prc_repeats": int(eval_cfg.prc_repeats),
        "seed": seed,
        "device": device,
    }


def generation_metrics(
    extractor: torch.nn.Module,
    extractor_name: str,
    files: list[Path],
    real_dataset,
    class_names: list[str],
    eval_cfg,
    *,
    samples_dir: str | Path,
    batch_size: int,
    num_workers: int,
    seed: int,
    device: torch.device,
    cache: dict | None = None,
) -> dict:
    """The generation section; `cache` receives the features for the memorization section."""
    fake = extract_features(extractor, read_images(files, batch_size), device)
    size = tuple(next(read_images(files[:1], 1)).shape[-2:])
    rows = real_subset(len(real_dataset), eval_cfg.max_real, seed)
    loader = _loader(real_dataset, rows, batch_size, num_workers)
    # real images resized (if needed) to the samples' size, so both sides see the same resolution
    real = extract_features(extractor, (b["image"] for b in loader), device, size=size)
    options = set_metric_options(eval_cfg, seed, device, extractor_name)
    section = set_metrics(real, fake, **options)
    section.update(
        {
            "feature_extractor": extractor_name,
            # how images became features (metrics.inception's reference recipe; absent for stand-ins)
            "feature_preprocessing": getattr(extractor, "preprocessing", None),
            "feature_weights": getattr(extractor, "source", None),
            "image_size": list(size),
            "real_subset": "all of the split"
            if len(rows) == len(real_dataset)
            else f"seeded random (seed={seed})",
            "samples_dir": str(samples_dir),
            # kept for readers of older metrics.json files
            "num_real": int(len(rows)),
            "num_generated": len(files),
        }
    )
    fake_labels = sample_class_indices(samples_dir, class_names, len(files))
    if fake_labels is not None and eval_cfg.per_class and len(class_names) > 1:
        real_labels = np.asarray(real_dataset.labels)[rows]
        section["per_class"] = per_class(real, real_labels, fake, fake_labels, class_names, **options)
        # classes with < MIN_CLASS_REAL real images: no row, but listed (the report prints them)
        section["per_class_skipped"] = skipped_classes(section["per_class"])
    if cache is not None:
        cache.update(
            {
                "extractor": extractor,
                "name": extractor_name,
                "fake": fake,
                "real": real,
                "rows": rows,
                "size": size,
            }
        )
    return section


def _pairs_picture(
    sample_files: list[Path], train_dataset, sample_rows, train_rows, size, views=None
) -> torch.Tensor:
    """Samples (top row) above their nearest training images (bottom row), each in the matched view.

    ``train_rows`` index the training images; ``views`` (same length, dihedral view ids) or None.
    """
    top = torch.cat([next(read_images([sample_files[i]], 1)) for i in sample_rows])
    views = [0] * len(train_rows) if views is None else views
    bottom = torch.stack(
        [
            apply_view(train_dataset[int(j)]["image"].float(), int(v))
            for j, v in zip(train_rows, views, strict=True)
        ]
    )
    if tuple(bottom.shape[-2:]) != tuple(size):
        bottom = torch.nn.functional.interpolate(bottom, size=tuple(size), mode="bilinear", antialias=True)
    return make_grid(torch.cat([top, bottom.clamp(0, 1)]), nrow=len(top), padding=2, pad_value=1.0)


def memorization_metrics(
    samples_dir: str | Path,
    index_dir: str | Path,
    split: str,
    train_dataset,
    eval_cfg,
    out_dir: Path,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    device: torch.device,
    cache: dict | None = None,
) -> dict:
    """Code-space memorization always; feature-space too when `cache` holds the generation features."""
    from lesion_lightning.data.indices import IndexDataset

    mem_cfg = eval_cfg.memorization
    percentile = float(mem_cfg.percentile)
    num_pairs = int(mem_cfg.num_pairs)
    num_bootstrap = int(eval_cfg.bootstrap)
    files = sorted(Path(samples_dir).glob("sample_*.png"))
    grids_path = Path(samples_dir) / "indices.npy"
    if not grids_path.is_file():
        return {
            "skipped": f"{grids_path} not found: samples written before code grids were saved; "
            "re-run `python -m lesion_lightning.sample` to get indices.npy"
        }
    gen_grids = np.load(grids_path)
    if len(gen_grids) != len(files):
        raise ValueError(f"{grids_path} holds {len(gen_grids)} grids for {len(files)} sample files")
    train = IndexDataset(index_dir, "train")
    test = IndexDataset(index_dir, split)
    if len(train) == 0 or len(test) == 0:
        return {"skipped": f"the index dataset {index_dir} needs non-empty train and {split} splits"}
    if len(train_dataset) != train.num_images:
        raise ValueError(
            f"the index dataset {index_dir} has {train.num_images} train images ({len(train)} grids, "
            f"{train.num_views} views each) but the data has {len(train_dataset)} train images: re-run encode "
            "for this data"
        )
    # against every view of every train image (encode train_views=K): a sample that copies a flipped
    # training lesion is a copy too
    gen_dist, gen_row = nearest_hamming(gen_grids, train.indices, device)
    test_dist, _ = nearest_hamming(test.indices, train.indices, device)
    section: dict = {
        "code_space": {
            "distance": "Hamming: fraction of grid positions whose codes differ",
            **memorization_summary(gen_dist, test_dist, percentile, num_bootstrap, seed),
            "n_train": len(train),
            "n_train_images": train.num_images,
            "train_views": train.num_views,
        }
    }
    size = tuple(gen_grids.shape[1:])
    picture_size = tuple(next(read_images(files[:1], 1)).shape[-2:]) if files else size
    pairs = closest_pairs(gen_dist, num_pairs)
    save_png(
        _pairs_picture(
            files,
            train_dataset,
            pairs,
            train.image_of_row(gen_row[pairs]),
            picture_size,
            train.views[gen_row[pairs]],
        ),
        out_dir / "memorization.png",
    )
    section["code_space"]["picture"] = "memorization.png"
    section["code_space"]["closest"] = [
        {
            "sample": files[i].name,
            "train_row": int(gen_row[i]),
            "train_image": int(train.image_of_row(gen_row[i])),
            "view": VIEW_NAMES[int(train.views[gen_row[i]])],
            "distance": float(gen_dist[i]),
        }
        for i in pairs
    ]

    if cache and "fake" in cache and mem_cfg.features:
        rows = real_subset(len(train_dataset), mem_cfg.max_train, seed)
        # the same views the prior was trained on: features of view v of every selected image, view-major
        feats = []
        for v in range(train.num_views):
            loader = _loader(train_dataset, rows, batch_size, num_workers)
            images = (apply_view(b["image"], v) for b in loader)
            feats.append(extract_features(cache["extractor"], images, device, size=cache["size"]))
        train_feats = torch.cat(feats)
        f_dist, f_row = nearest_euclidean(cache["fake"], train_feats, device)
        t_dist, _ = nearest_euclidean(cache["real"], train_feats, device)
        pairs = closest_pairs(f_dist, num_pairs)
        save_png(
            _pairs_picture(
                files,
                train_dataset,
                pairs,
                rows[f_row[pairs] % len(rows)],
                picture_size,
                f_row[pairs] // len(rows),
            ),
            out_dir / "memorization_features.png",
        )
        section["feature_space"] = {
            "distance": "Euclidean distance between the FID extractor's features",
            **memorization_summary(f_dist, t_dist, percentile, num_bootstrap, seed),
            "n_train": int(len(rows)) * train.num_views,
            "n_train_images": int(len(rows)),
            "train_views": train.num_views,
            "picture": "memorization_features.png",
        }
    else:
        section["feature_space"] = {"skipped": "no feature extractor (see the generation section)"}
    return section
