"""Turn every image of every split into a grid of codebook indices (the PixelCNN's dataset).

`python -m lesion_lightning.encode vqvae_ckpt=PATH` reuses the VQ-VAE's own data settings and
split (recorded in its checkpoint), writes `{split}_indices.npy` (uint16, N x H x W, memory-mappable),
`{split}_labels.npy` and `manifest.json` into a temporary folder and renames it when complete.

`train_views=K` (default: all 8 dihedral views when data.augment flips or rotates, else 1) encodes each
train image under K views (data/views.py) and stores them as K x N train rows (view-major) with
`train_views.npy` holding each row's view id; val and test are encoded once, un-augmented.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lesion_lightning.data.indices import MANIFEST
from lesion_lightning.data.stale import remove_stale_temporaries
from lesion_lightning.data.views import VIEW_NAMES, apply_view, resolve_train_views
from lesion_lightning.modules.checkpoints import VQVAECheckpoint
from lesion_lightning.utils.diskspace import ensure_free_space, reporting_disk_errors
from lesion_lightning.utils.io import atomic_write_json
from lesion_lightning.utils.runtime import pick_device, publish_dir

log = logging.getLogger(__name__)
ENCODE_HINT = "out_dir=<a folder with room> (in the pipeline: paths.log_dir=...)"


@torch.no_grad()
def encode_split(
    vqvae,
    dataset,
    batch_size: int,
    num_workers: int,
    out_path: Path,
    device: torch.device,
    desc: str,
    views: int = 1,
) -> tuple[np.ndarray, float]:
    """Encode one split into a uint16 .npy written in place (inside the caller's temp folder).

    With ``views`` = K > 1 every image is encoded under each of the first K dihedral views (the view is
    applied to the image, then encoded: never to the grid). Rows are view-major: rows v*N .. (v+1)*N - 1
    hold view v of images 0 .. N-1, so the first N rows are the un-augmented codes.
    """
    n = len(dataset)
    h, w = vqvae.net.latent_shape(int(dataset[0]["image"].shape[-1])) if n else (0, 0)
    grids = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint16, shape=(n * views, h, w))
    labels = np.zeros(n, dtype=np.int64)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    start, done = time.perf_counter(), 0
    with tqdm(total=n * views, desc=desc, unit="img") as bar:
        for batch in loader:
            images = batch["image"].to(device)
            b = images.shape[0]
            for v in range(views):
                idx = vqvae.net.encode(apply_view(images, v))
                grids[v * n + done : v * n + done + b] = idx.cpu().numpy().astype(np.uint16)
            labels[done : done + b] = batch["label"].numpy()
            done += b
            bar.update(b * views)
    grids.flush()
    del grids
    rate = done * views / max(time.perf_counter() - start, 1e-9)
    return np.tile(labels, views), rate


def encode(cfg: DictConfig) -> Path:
    device = pick_device(cfg.device)
    ckpt = VQVAECheckpoint(cfg.vqvae_ckpt)
    vqvae = ckpt.load_module(device)
    k = vqvae.net.codebook_size
    if k > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"codebook of {k} codes does not fit the uint16 index format (max 65536)")
    dm = ckpt.build_datamodule(OmegaConf.to_container(cfg.get("data") or {}, resolve=True))
    out_dir = Path(cfg.out_dir)
    for line in remove_stale_temporaries(out_dir.parent, prefix=f".{out_dir.name}.tmp-"):
        log.warning("removed the temporary folder of an interrupted encode: %s", line)
    # the train split's views: the data's own orientation augmentations, in code space (val/test stay
    # un-augmented so their bits/dim is comparable across index datasets)
    train_views = resolve_train_views(cfg.get("train_views"), dm.hparams.get("augment"))
    split_sizes, rates, images = {}, {}, {}
    datasets = {split: dm.split_dataset(split, augment=False) for split in cfg.splits}
    h, w = vqvae.net.latent_shape(int(dm.hparams.image_size))
    # uint16 grids + int64 labels (+ a uint8 view id) per row, plus the manifest
    rows = sum(len(d) * (train_views if split == "train" else 1) for split, d in datasets.items())
    needed = rows * (h * w * 2 + 9) + (1 << 16)
    ensure_free_space(out_dir.parent, needed, "index dataset", ENCODE_HINT)
    with (
        reporting_disk_errors(out_dir.parent, "index dataset", ENCODE_HINT, needed),
        publish_dir(out_dir, overwrite=cfg.overwrite, what="index dataset") as tmp,
    ):
        for split in cfg.splits:
            dataset = datasets[split]
            views = train_views if split == "train" else 1
            labels, rates[split] = encode_split(
                vqvae,
                dataset,
                cfg.batch_size,
                cfg.num_workers,
                tmp / f"{split}_indices.npy",
                device,
                f"encode {split}" + (f" x{views} views" if views > 1 else ""),
                views=views,
            )
            np.save(tmp / f"{split}_labels.npy", labels)
            if views > 1:  # view id of every row (view-major: row v*N + i is view v of image i)
                np.save(tmp / f"{split}_views.npy", np.repeat(np.arange(views, dtype=np.uint8), len(dataset)))
            split_sizes[split] = len(dataset) * views
            images[split] = len(dataset)
        image_size = int(dm.hparams.image_size)
        manifest = {
            "format": 1,
            "grid_size": list(vqvae.net.latent_shape(image_size)),
            "num_codes": k,
            "image_size": image_size,
            "preprocessing": {key: dm.hparams.get(key) for key in ("normalization", "resize")},
            "splits": split_sizes,  # rows per split (train: images x views)
            "images": images,  # distinct images per split
            "views": {
                "train": list(VIEW_NAMES[:train_views]),
                "layout": "view-major: row v * images + i is view v of image i; {split}_views.npy",
            },
            "class_names": list(dm.class_names),
            "vqvae": {
                "checkpoint": str(Path(cfg.vqvae_ckpt).resolve()),
                "fingerprint": ckpt.fingerprint,
                "net": ckpt.net_settings,
            },
            "data": dm.describe(),
            **dm.state_dict(),  # split_file, split_digest: the split every later stage reads
            "images_per_s": rates,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    total_rate = sum(split_sizes.values()) / max(
        sum(split_sizes[s] / max(rates[s], 1e-9) for s in rates), 1e-9
    )
    log.info("Index dataset written to %s (%s, %.1f images/s)", out_dir, split_sizes, total_rate)
    print(
        f"index dataset: {out_dir}  rows={split_sizes}  train_views={train_views}  grid={manifest['grid_size']}  "
        f"{total_rate:.1f} images/s"
    )
    return out_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    encode(cfg)


if __name__ == "__main__":
    main()
