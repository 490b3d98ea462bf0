"""Turn every image of every split into a grid of codebook indices (the PixelCNN's dataset).

`python -m lesion_lightning.encode vqvae_ckpt=PATH` reuses the VQ-VAE's own data settings and
split (recorded in its checkpoint), writes `{split}_indices.npy` (uint16, N x H x W, memory-mappable),
`{split}_labels.npy` and `manifest.json` into a temporary folder and renames it when complete.
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
from lesion_lightning.modules.checkpoints import VQVAECheckpoint
from lesion_lightning.utils.diskspace import ensure_free_space, reporting_disk_errors
from lesion_lightning.utils.io import atomic_write_json
from lesion_lightning.utils.runtime import pick_device, publish_dir

log = logging.getLogger(__name__)
ENCODE_HINT = "out_dir=<a folder with room> (in the pipeline: paths.log_dir=...)"


@torch.no_grad()
def encode_split(
    vqvae, dataset, batch_size: int, num_workers: int, out_path: Path, device: torch.device, desc: str
) -> tuple[np.ndarray, float]:
    """Encode one split into a uint16 .npy written in place (inside the caller's temp folder)."""
    n = len(dataset)
    h, w = vqvae.net.latent_shape(int(dataset[0]["image"].shape[-1])) if n else (0, 0)
    grids = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint16, shape=(n, h, w))
    labels = np.zeros(n, dtype=np.int64)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    start, done = time.perf_counter(), 0
    with tqdm(total=n, desc=desc, unit="img") as bar:
        for batch in loader:
            idx = vqvae.net.encode(batch["image"].to(device))
            b = idx.shape[0]
            grids[done : done + b] = idx.cpu().numpy().astype(np.uint16)
            labels[done : done + b] = batch["label"].numpy()
            done += b
            bar.update(b)
    grids.flush()
    del grids
    rate = done / max(time.perf_counter() - start, 1e-9)
    return labels, rate


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
    split_sizes, rates = {}, {}
    datasets = {split: dm.split_dataset(split, augment=False) for split in cfg.splits}
    h, w = vqvae.net.latent_shape(int(dm.hparams.image_size))
    # uint16 grids + int64 labels per image, plus the manifest
    needed = sum(len(d) for d in datasets.values()) * (h * w * 2 + 8) + (1 << 16)
    ensure_free_space(out_dir.parent, needed, "index dataset", ENCODE_HINT)
    with (
        reporting_disk_errors(out_dir.parent, "index dataset", ENCODE_HINT, needed),
        publish_dir(out_dir, overwrite=cfg.overwrite, what="index dataset") as tmp,
    ):
        for split in cfg.splits:
            dataset = datasets[split]
            labels, rates[split] = encode_split(
                vqvae,
                dataset,
                cfg.batch_size,
                cfg.num_workers,
                tmp / f"{split}_indices.npy",
                device,
                f"encode {split}",
            )
            np.save(tmp / f"{split}_labels.npy", labels)
            split_sizes[split] = len(dataset)
        image_size = int(dm.hparams.image_size)
        manifest = {
            "format": 1,
            "grid_size": list(vqvae.net.latent_shape(image_size)),
            "num_codes": k,
            "image_size": image_size,
            "preprocessing": {key: dm.hparams.get(key) for key in ("normalization", "resize")},
            "splits": split_sizes,
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
        f"index dataset: {out_dir}  splits={split_sizes}  grid={manifest['grid_size']}  "
        f"{total_rate:.1f} images/s"
    )
    return out_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="encode")
def main(cfg: DictConfig) -> None:
    encode(cfg)


if __name__ == "__main__":
    main()
