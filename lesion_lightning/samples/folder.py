"""Sample a prior into a folder: sample_0000.png ... one per sample, grid.png, indices.npy and
samples.json (what was run, how long it took), written into a temporary folder renamed when complete.
Same seed, same images. The `sample` command, the utility stage and the guidance benchmark all sample
through `sample_to_folder`; `data.generated` reads the folder back.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lesion_lightning.data.generated import SAMPLES_JSON
from lesion_lightning.models.sampling import SamplingOptions, auto_batch_size
from lesion_lightning.modules.checkpoints import PriorCheckpoint
from lesion_lightning.utils.grid import captioned_grid, grid_selection
from lesion_lightning.utils.io import atomic_write_json, save_png
from lesion_lightning.utils.labels import Classes, sample_labels
from lesion_lightning.utils.runtime import pick_device, publish_dir

log = logging.getLogger(__name__)


def resolve_label(
    pixelcnn,
    label: str | int | None,
    n: int,
    device: torch.device,
    names: list[str],
    distribution: str = "uniform",
    seed: int = 0,
    record: dict | None = None,
    index_dataset: str | None = None,
) -> torch.Tensor | None:
    """Class name (or index) -> (n,) labels; unconditional priors take none, conditional ones draw
    from `distribution` (train | uniform | a class; see utils.labels), described into `record`.
    `names` and `index_dataset` (whose train split gives the class mix) come from the `PriorCheckpoint`."""
    if not pixelcnn.conditional:
        if label is not None:
            raise ValueError(
                f"label={label!r} given, but this PixelCNN is unconditional (trained with "
                "model.net.num_classes=0); drop `label` or train a conditional prior"
            )
        return None
    if label is None:
        drawn, how = sample_labels(distribution, names, pixelcnn.net.num_classes, n, seed, index_dataset)
        if record is not None:
            record.update(how)
        return torch.from_numpy(drawn).to(device)
    known = (
        names if len(names) == pixelcnn.net.num_classes else [str(c) for c in range(pixelcnn.net.num_classes)]
    )
    idx = Classes.of(known).index(label, "label")
    return torch.full((n,), idx, dtype=torch.long, device=device)


def tile_captions(labels: list[str | None], guidance: float) -> list[str] | None:
    """grid.png captions: each tile's class, plus the guidance weight when guided; None if neither."""
    suffix = f" w={guidance:g}" if guidance else ""
    if all(name is None for name in labels) and not suffix:
        return None
    return [f"{name if name is not None else ''}{suffix}".strip() for name in labels]


def sample_uniforms(seed: int, sample_ids, height: int, width: int) -> torch.Tensor:
    """(N, H, W) uniforms, one CPU random stream per sample id: sample n is the same image whatever the
    batch size, device or number of samples requested."""
    return torch.stack(
        [
            torch.rand(height, width, generator=torch.Generator().manual_seed(seed * 1_000_003 + n))
            for n in sample_ids
        ]
    )


DECODE_CHUNK = 8


@torch.no_grad()
def sample_to_folder(cfg: DictConfig) -> Path:
    """Draw `cfg.num_samples` lesions (conf/sample.yaml's keys) into `cfg.out_dir`; returns the folder."""
    if cfg.num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {cfg.num_samples}")
    if cfg.batch_size != "auto" and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise ValueError(f"batch_size must be `auto` or an integer >= 1, got {cfg.batch_size!r}")
    device = pick_device(cfg.device)
    prior = PriorCheckpoint(cfg.pixelcnn_ckpt)
    vqvae_ckpt = prior.paired_vqvae(cfg.vqvae_ckpt)
    h, w = prior.grid_size
    pixelcnn = prior.load_module(device)
    vqvae = vqvae_ckpt.load_module(device)
    names = prior.class_names
    label_record: dict = {}
    labels_all = resolve_label(
        pixelcnn,
        cfg.label,
        cfg.num_samples,
        device,
        names,
        cfg.get("label_distribution", "train"),
        int(cfg.seed),
        label_record,
        prior.index_dataset,
    )

    options = SamplingOptions(float(cfg.temperature), float(cfg.guidance), cfg.top_k, cfg.top_p)
    batch_size = (
        auto_batch_size(pixelcnn.net, h, w, cfg.num_samples, device, options)
        if cfg.batch_size == "auto"
        else int(cfg.batch_size)
    )
    out_dir = Path(cfg.out_dir)
    num_batches = math.ceil(cfg.num_samples / batch_size)
    files, grid_list, label_names = [], [], []
    # grid.png's tiles, chosen up front so only those images stay in memory (not all of them)
    tiles, per_row = grid_selection(
        int(cfg.num_samples), labels_all.tolist() if labels_all is not None else None, int(cfg.seed)
    )
    shown = {i: None for i in tiles if i is not None}
    start = time.perf_counter()
    with (
        publish_dir(out_dir, overwrite=cfg.overwrite, what="samples") as tmp,
        tqdm(total=num_batches * h, desc=f"sampling {h}x{w} ({cfg.sampler})", unit="row") as bar,
    ):
        for b in range(num_batches):
            lo, hi = b * batch_size, min((b + 1) * batch_size, cfg.num_samples)
            labels = labels_all[lo:hi] if labels_all is not None else None
            grids = pixelcnn.net.generate(
                hi - lo,
                h,
                w,
                labels=labels,
                options=options,
                uniforms=sample_uniforms(int(cfg.seed), range(lo, hi), h, w),
                progress=lambda *_: bar.update(1),
                method=cfg.sampler,
            )
            # decode a few at a time: full-resolution decoder activations dwarf the code grids
            batch_images = torch.cat(
                [vqvae.net.decode_indices(chunk).clamp(0, 1).cpu() for chunk in grids.split(DECODE_CHUNK)]
            )
            for i, image in enumerate(batch_images):
                files.append(save_png(image, tmp / f"sample_{lo + i:04d}.png").name)
                label_names.append(names[int(labels[i])] if labels is not None and names else None)
                if lo + i in shown:
                    shown[lo + i] = image
            grid_list.append(grids.cpu())
        seconds = time.perf_counter() - start
        image_size = list(batch_images.shape[-2:])
        # the sampled code grids, for the memorization check against the train split's grids
        np.save(tmp / "indices.npy", torch.cat(grid_list).numpy().astype(np.uint16))
        blank = torch.ones_like(batch_images[0])
        captions = tile_captions(
            [label_names[i] if i is not None else None for i in tiles], float(cfg.guidance)
        )
        if captions is not None:  # a blank tile gets no caption
            captions = [c if i is not None else "" for c, i in zip(captions, tiles, strict=True)]
        grid = torch.stack([shown[i] if i is not None else blank for i in tiles])
        save_png(captioned_grid(grid, captions, nrow=per_row), tmp / "grid.png")
        atomic_write_json(
            tmp / SAMPLES_JSON,
            {
                "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()),
                "vqvae_ckpt": str(Path(vqvae_ckpt.path).resolve()),
                "vqvae_fingerprint": vqvae_ckpt.fingerprint,
                "settings": OmegaConf.to_container(cfg, resolve=True),
                "grid_size": [h, w],
                "batch_size": batch_size,
                "image_size": image_size,
                "grid_png": {"tiles": tiles, "per_row": per_row},
                "device": str(device),
                "seconds": seconds,
                "seconds_per_image": seconds / cfg.num_samples,
                "files": files,
                "labels": label_names,
                "label_indices": labels_all.tolist() if labels_all is not None else None,
                **label_record,
                "indices": "indices.npy",
            },
        )
    print(
        f"{cfg.num_samples} samples ({seconds / cfg.num_samples:.2f} s/image) in {out_dir}; grid: {out_dir / 'grid.png'}"
    )
    return out_dir
