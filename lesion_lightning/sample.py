"""Generate lesions: `python -m lesion_lightning.sample pixelcnn_ckpt=PATH vqvae_ckpt=PATH num_samples=N`.

Writes sample_0000.png ... one per sample, grid.png and samples.json (what was run, how long it took)
into a temporary folder renamed when complete. Same seed, same images.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from lesion_lightning.utils.checkpoints import check_pair, fingerprint, load_pixelcnn, load_vqvae
from lesion_lightning.utils.io import atomic_write_json, save_png
from lesion_lightning.utils.labels import sample_labels
from lesion_lightning.utils.runtime import pick_device, publish_dir

log = logging.getLogger(__name__)


def resolve_label(
    pixelcnn,
    label: str | int | None,
    n: int,
    device: torch.device,
    distribution: str = "uniform",
    seed: int = 0,
    record: dict | None = None,
) -> torch.Tensor | None:
    """Class name (or index) -> (n,) labels; unconditional priors take none, conditional ones draw
    from `distribution` (train | uniform | a class; see utils.labels), described into `record`."""
    names = list(pixelcnn.hparams.get("class_names") or [])
    if not pixelcnn.conditional:
        if label is not None:
            raise ValueError(
                f"label={label!r} given, but this PixelCNN is unconditional (trained with "
                "model.net.num_classes=0); drop `label` or train a conditional prior"
            )
        return None
    if label is None:
        drawn, how = sample_labels(
            distribution, names, pixelcnn.net.num_classes, n, seed, pixelcnn.hparams.get("index_dataset")
        )
        if record is not None:
            record.update(how)
        return torch.from_numpy(drawn).to(device)
    if isinstance(label, str) and label in names:
        idx = names.index(label)
    elif isinstance(label, int) and 0 <= label < pixelcnn.net.num_classes:
        idx = label
    else:
        raise ValueError(f"label={label!r} is not one of this prior's classes {names}")
    return torch.full((n,), idx, dtype=torch.long, device=device)


MAX_AUTO_BATCH = 256


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


def auto_batch_size(pixelcnn, height: int, width: int, num_samples: int, device: torch.device) -> int:
    """As many grids per sampling batch as the memory budget allows (bigger batches amortise each step).

    The cached sampler holds, per grid, a few rows of activations per layer plus one position's
    logits; budget half the free GPU memory, or a quarter of the free RAM (at most 8 GiB) on CPU.
    """
    net = pixelcnn.net
    per_grid = 4 * (
        net.num_layers * (net.kernel_size // 2 + 4) * width * 4 * net.channels
        + 4 * net.num_codes
        + 2 * height * width
    )
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 2
    else:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):  # pragma: no cover - non-POSIX
            avail = 4 << 30
        budget = min(avail // 4, 8 << 30)
    return int(max(1, min(num_samples, MAX_AUTO_BATCH, budget // per_grid)))


@torch.no_grad()
def sample(cfg: DictConfig) -> Path:
    if cfg.num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {cfg.num_samples}")
    if cfg.batch_size != "auto" and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise ValueError(f"batch_size must be `auto` or an integer >= 1, got {cfg.batch_size!r}")
    device = pick_device(cfg.device)
    pixelcnn = load_pixelcnn(cfg.pixelcnn_ckpt, device)
    vqvae_path = cfg.vqvae_ckpt or pixelcnn.hparams.get("vqvae_ckpt")
    if not vqvae_path:
        raise ValueError(
            "vqvae_ckpt is not set and the PixelCNN checkpoint records none; pass vqvae_ckpt=PATH"
        )
    check_pair(pixelcnn, vqvae_path)
    vqvae = load_vqvae(vqvae_path, device)
    if not pixelcnn.hparams.get("grid_size"):
        raise ValueError(
            f"pixelcnn_ckpt={cfg.pixelcnn_ckpt} records no grid size; retrain it with data=indices"
        )
    h, w = pixelcnn.hparams.grid_size
    label_record: dict = {}
    labels_all = resolve_label(
        pixelcnn,
        cfg.label,
        cfg.num_samples,
        device,
        cfg.get("label_distribution", "train"),
        int(cfg.seed),
        label_record,
    )
    names = list(pixelcnn.hparams.get("class_names") or [])

    batch_size = (
        auto_batch_size(pixelcnn, h, w, cfg.num_samples, device)
        if cfg.batch_size == "auto"
        else int(cfg.batch_size)
    )
    out_dir = Path(cfg.out_dir)
    num_batches = math.ceil(cfg.num_samples / batch_size)
    files, images, grid_list, label_names = [], [], [], []
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
                temperature=cfg.temperature,
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
            images.append(batch_images)
            grid_list.append(grids.cpu())
        seconds = time.perf_counter() - start
        images_t = torch.cat(images)
        # the sampled code grids, for the memorization check against the train split's grids
        np.save(tmp / "indices.npy", torch.cat(grid_list).numpy().astype(np.uint16))
        save_png(make_grid(images_t, nrow=min(8, len(images_t)), padding=2, pad_value=1.0), tmp / "grid.png")
        atomic_write_json(
            tmp / "samples.json",
            {
                "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()),
                "vqvae_ckpt": str(Path(vqvae_path).resolve()),
                "vqvae_fingerprint": fingerprint(vqvae_path),
                "settings": OmegaConf.to_container(cfg, resolve=True),
                "grid_size": [h, w],
                "batch_size": batch_size,
                "image_size": list(images_t.shape[-2:]),
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
