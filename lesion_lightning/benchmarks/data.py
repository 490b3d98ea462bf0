"""Data-loading throughput: the resized uint8 cache vs decoding + resizing the source JPEG every time.

The bench writes ``num_images`` large JPEGs (``source_size``, like real ISIC photographs) in the
ISIC Archive layout into a temporary folder, builds the cache through the real
``LesionDataModule.prepare_data`` (timed too), then times DataLoaders over, for each worker count:

- ``cache``: the datamodule's train split (memory-mapped cache, same augmentation and normalization);
- ``jpeg``: a Dataset that opens the source JPEG, decodes it in full and resizes it every time
  (what a loader without a cache does), then the same augmentation and normalization;
- ``jpeg_draft`` (optional): the same, but decoding at a reduced JPEG DCT scale first (the trick the
  cache build itself uses), i.e. the best a cache-less loader can do with PIL.

All rows are measured in the same run; ``ratios`` are cache / jpeg per worker count.

The cache build is timed too, with and without duplicate detection (``build_repeats`` alternating
builds each, the fastest kept): "with" hashes every decoded image and stores its thumbnail during
the build, then finds exact and near duplicates (:func:`~lesion_lightning.data.duplicates.find_duplicates`);
``detection_cost`` is (with - without) / without. Samples are drawn
at random (with repeats when more are timed than exist); each row times at least ``batches`` batches
and ``min_seconds`` seconds, after ``warmup_batches`` untimed batches.

Run it with ``python -m lesion_lightning.bench data`` or ``python -m lesion_lightning.benchmarks.data``.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, RandomSampler

from lesion_lightning.data.cache import build_cache, load_rgb
from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.duplicates import find_duplicates
from lesion_lightning.data.imageops import resize_image, to_rgb
from lesion_lightning.data.transforms import ImageTransform, build_augment
from lesion_lightning.utils.config import CONF_DIR

CONFIG = "conf/bench/data.yaml"
SOURCES = ("cache", "jpeg", "jpeg_draft")


def write_sources(root: Path, num_images: int, size: tuple[int, int], quality: int, seed: int) -> list[Path]:
    """Large photo-like JPEGs (smooth colour fields + sensor-like noise) and an ISIC metadata.csv."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    paths, rows = [], []
    for i in range(num_images):
        coarse = rng.integers(40, 230, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        path = root / f"ISIC_{i:07d}.jpg"
        Image.fromarray(noisy).save(path, quality=quality)
        paths.append(path)
        rows.append([path.stem, "melanoma" if i % 2 else "nevus"])
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["isic_id", "diagnosis"])
        writer.writerows(rows)
    return paths


def decode_full(path: Path, image_size: int, resize: str) -> np.ndarray:
    """Open, fully decode, EXIF-rotate, convert and resize: the per-epoch cost without a cache."""
    with Image.open(path) as img:
        img.load()
        img = to_rgb(ImageOps.exif_transpose(img))
        return np.asarray(resize_image(img, image_size, resize), dtype=np.uint8)


class JpegDataset(Dataset):
    """Decodes + resizes the source image on every access; items like the datamodule's."""

    def __init__(
        self, paths: list[Path], image_size: int, resize: str, transform: ImageTransform, draft: bool
    ):
        self.paths, self.image_size, self.resize = paths, image_size, resize
        self.transform, self.draft = transform, draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.draft:
            image = load_rgb(self.paths[i], self.image_size, self.resize, min_image_size=1)
        else:
            image = decode_full(self.paths[i], self.image_size, self.resize)
        return {"image": self.transform(image), "label": torch.tensor(i % 2), "index": torch.tensor(i)}


def time_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    batches: int,
    warmup: int,
    seed: int,
    min_seconds: float = 0.0,
) -> tuple[float, float, int]:
    """(images per second, seconds, batches timed): at least ``batches`` batches and ``min_seconds``
    after ``warmup`` untimed ones, so fast rows are timed long enough to be more than noise."""
    # an effectively endless random stream (repeats allowed) that we stop ourselves
    sampler = RandomSampler(dataset, num_samples=10**7, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    it = iter(loader)
    for _ in range(warmup):  # includes worker start-up and the first prefetches
        next(it)
    n, timed, start = 0, 0, time.perf_counter()
    while timed < batches or time.perf_counter() - start < min_seconds:
        n += len(next(it)["image"])
        timed += 1
    seconds = time.perf_counter() - start
    del it  # shuts the workers down
    return n / seconds, seconds, timed


def time_builds(paths: list[Path], work: Path, image_size: int, resize: str, workers, repeats: int) -> dict:
    """Fastest of ``repeats`` cache builds without and with duplicate detection, alternating."""
    import scipy.spatial  # noqa: F401  (a one-time import, not a per-build cost)

    ids = [p.stem for p in paths]
    best = {"without": float("inf"), "with": float("inf"), "search": float("inf")}
    groups = 0
    for r in range(repeats):
        for detect in (False, True):
            directory = work / f"build-{r}-{int(detect)}"
            start = time.perf_counter()
            cache = build_cache(
                directory, "bench", ids, paths, image_size, resize, 1, workers=workers, progress=False,
                content=detect,
            )  # fmt: skip
            searched = time.perf_counter()
            if detect:
                found = find_duplicates(cache.contents, cache.thumbs(), paths, 0.008)
                groups = len(found.groups)
            end = time.perf_counter()
            key = "with" if detect else "without"
            best[key] = min(best[key], end - start)
            if detect:
                best["search"] = min(best["search"], end - searched)
    n = len(paths)
    return {
        "cache_build_images_per_s_without_duplicates": n / best["without"],
        "cache_build_images_per_s_with_duplicates": n / best["with"],
        "duplicate_search_s": best["search"],
        "duplicate_groups_found": groups,
        "detection_cost": (best["with"] - best["without"]) / best["without"],
    }


def _augment_config(cfg: DictConfig) -> dict[str, Any] | None:
    if not cfg.augment:
        return None
    path = Path(cfg.augment_config)
    if not path.is_absolute():
        path = CONF_DIR.parent / path  # relative to the checkout holding conf/
    if not path.is_file():
        raise SystemExit(f"{CONFIG}: augment_config {path} not found")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def run(cfg: DictConfig) -> dict:
    """Measure every (source, workers) row in one run; see the module docstring."""
    num_images = int(cfg.num_images)
    source_size = tuple(int(v) for v in cfg.source_size)
    image_size, batch_size = int(cfg.image_size), int(cfg.batch_size)
    workers_list = [int(w) for w in cfg.workers]
    batches, warmup = int(cfg.batches), int(cfg.warmup_batches)
    min_seconds = float(cfg.min_seconds)
    resize, seed = str(cfg.resize), int(cfg.seed)
    sources = list(cfg.sources)
    unknown = set(sources) - set(SOURCES)
    if unknown or len(source_size) != 2:
        raise SystemExit(f"{CONFIG}: sources must be among {SOURCES} and source_size [width, height]")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    augment = _augment_config(cfg)

    with tempfile.TemporaryDirectory(prefix="lesion_bench_data_") as tmp:
        root = Path(tmp) / "isic"
        start = time.perf_counter()
        paths = write_sources(root, num_images, source_size, int(cfg.jpeg_quality), seed)
        write_s = time.perf_counter() - start
        dm = LesionDataModule(
            str(root), image_size=image_size, resize=resize, batch_size=batch_size, augment=augment,
            val_fraction=0.0, test_fraction=0.0, cache_workers=cfg.cache_workers,
        )  # fmt: skip
        start = time.perf_counter()
        dm.prepare_data()
        build_s = time.perf_counter() - start
        dm.setup("fit")
        cached = dm.split_dataset("train", augment=True)
        transform = ImageTransform(build_augment(augment), dm.hparams.normalization)
        datasets = {
            "cache": cached,
            "jpeg": JpegDataset(paths, image_size, resize, transform, draft=False),
            "jpeg_draft": JpegDataset(paths, image_size, resize, transform, draft=True),
        }
        rows = []
        for workers in workers_list:
            for source in sources:
                ips, seconds, timed = time_loader(
                    datasets[source], batch_size, workers, batches, warmup, seed, min_seconds
                )
                rows.append(
                    {
                        "source": source,
                        "workers": workers,
                        "images_per_s": ips,
                        "batches": timed,
                        "seconds": seconds,
                    }
                )
        mean_kb = float(np.mean([p.stat().st_size for p in paths]) / 1024)
        builds = time_builds(
            paths,
            Path(tmp) / "builds",
            image_size,
            resize,
            cfg.cache_workers,
            int(cfg.build_repeats),
        )

    rate = {(r["source"], r["workers"]): r["images_per_s"] for r in rows}
    ratios = {}
    for workers in workers_list:
        for other in ("jpeg", "jpeg_draft"):
            if ("cache", workers) in rate and (other, workers) in rate:
                ratios[f"cache_over_{other}_w{workers}"] = rate[("cache", workers)] / rate[(other, workers)]
    settings = {
        "num_images": num_images,
        "source_size": list(source_size),
        "source_jpeg_kb_mean": mean_kb,
        "image_size": image_size,
        "resize": resize,
        "batch_size": batch_size,
        "min_batches_timed": batches,
        "min_seconds": min_seconds,
        "warmup_batches": warmup,
        "augment": augment is not None,
        "normalization": dm.hparams.normalization,
        "torch_threads": torch.get_num_threads(),
        "write_sources_s": write_s,
        "cache_build_s": build_s,
        "cache_build_images_per_s": num_images / build_s,
        "duplicate_search_s": builds["duplicate_search_s"],
        "duplicate_groups_found": builds["duplicate_groups_found"],
    }
    rows += [
        {
            "source": f"cache build {side} duplicate detection",
            "workers": cfg.cache_workers,
            "images_per_s": ips,
        }
        for side, ips in (
            ("without", builds["cache_build_images_per_s_without_duplicates"]),
            ("with", builds["cache_build_images_per_s_with_duplicates"]),
        )
    ]
    ratios["duplicate_detection_cost_of_build"] = builds["detection_cost"]
    return {"settings": settings, "rows": rows, "ratios": ratios}


if __name__ == "__main__":
    result = run(OmegaConf.load(Path(sys.argv[1]) if len(sys.argv) > 1 else CONF_DIR / "bench" / "data.yaml"))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in result["settings"].items()})
    for row in result["rows"]:
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.3g}")
