"""`bench first_stage`: first-stage checkpoints (MSE VQ-VAE, VQGAN, ...) on the same held-out lesions.

Every checkpoint reconstructs the same images (eval mode, float32, clamped to [0, 1], on the scale the
datamodule gives them: its `normalization`, recorded in the output). Per checkpoint:

- `psnr`: mean over images of 10 log10(1 / MSE_i) (per-image, not pooled), with a bootstrap 95 % interval;
- `ssim`: mean per-image SSIM (torchmetrics, Gaussian 11x11, data_range 1);
- `sharpness`: mean per-image HF(recon) / HF(original) (metrics/sharpness.py; 1 = as sharp as the originals);
- `rfid`: FID between the originals' and the reconstructions' TF-FID Inception pool features, n images on
  both sides, interval from resampling the reconstructions (metrics.distribution.set_metrics); flagged
  unreliable below 2,048 images like every FID here.

For each [baseline, other] pair: rFID and sharpness ratios other / baseline, and the paired differences of
per-image PSNR and SSIM (other - baseline, same images, bootstrap over images).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.image import structural_similarity_index_measure
from torchvision.utils import make_grid

from lesion_lightning.metrics.distribution import RELIABLE_N, set_metrics
from lesion_lightning.metrics.generation import extract_features
from lesion_lightning.metrics.sharpness import sharpness_ratio
from lesion_lightning.metrics.stats import Estimate, mean_interval, per_image_psnr
from lesion_lightning.modules.checkpoints import VQVAECheckpoint
from lesion_lightning.utils.io import save_png


def _device(name: str) -> torch.device:
    return torch.device(
        "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)
    )


def heldout_images(cfg: DictConfig, ckpt: VQVAECheckpoint) -> tuple[torch.Tensor, dict]:
    """(N, 3, H, W) float images in [0, 1] none of the checkpoints trained on, and where they came from."""
    from lesion_lightning.data.datamodule import LesionDataModule

    settings = ckpt.datamodule_settings
    if cfg.eval_set == "test":
        dm = ckpt.build_datamodule()
        source = {"eval_set": "test split of the first checkpoint's data", "root": settings["root"]}
    elif cfg.eval_set == "fresh_synthetic":
        trained = settings.get("synthetic") or {}
        if not trained:
            raise ValueError(
                f"bench.eval_set=fresh_synthetic needs checkpoints trained on data=synthetic; {ckpt.path} was "
                "trained on real images: use bench.eval_set=test"
            )
        if int(cfg.synthetic.seed) == int(trained.get("seed", 0)):
            raise ValueError(
                f"bench.synthetic.seed={cfg.synthetic.seed} is the training set's seed: pick another one, "
                "or the 'held-out' lesions are the training lesions"
            )
        synthetic = {**trained, "num_images": int(cfg.synthetic.num_images), "seed": int(cfg.synthetic.seed)}
        root = f"{cfg.out_dir}/heldout/n{synthetic['num_images']}_px{synthetic['image_size']}_seed{synthetic['seed']}"
        hp = {**settings, "root": root, "synthetic": synthetic, "split_file": None, "split_digest": None}
        # nearly every fresh lesion lands in the un-augmented test split
        hp.update(val_fraction=0.05, test_fraction=0.9, cache_dir=None)
        dm = LesionDataModule(**hp)
        dm.prepare_data()
        source = {"eval_set": "fresh synthetic lesions (never trained on)", "seed": synthetic["seed"]}
    else:
        raise ValueError(f"bench.eval_set must be fresh_synthetic or test, got {cfg.eval_set!r}")
    dm.setup("test")
    images = torch.cat([b["image"].float() for b in dm.test_dataloader()])
    source.update(
        n=len(images), image_size=list(images.shape[-2:]), normalization=settings.get("normalization")
    )
    return images, source


@torch.no_grad()
def reconstruct(
    net: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    out = [
        net(images[i : i + batch_size].to(device)).recon.float().clamp(0, 1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def _interval(values: np.ndarray, num: int) -> Estimate:
    return mean_interval(values[np.isfinite(values)], num=num)


def _paired_difference(a: np.ndarray, b: np.ndarray, num: int) -> Estimate:
    return mean_interval(b - a, num=num)


def run(cfg: DictConfig) -> dict:
    if not cfg.checkpoints:
        raise ValueError("bench.checkpoints is empty: pass 'bench.checkpoints={name: path, ...}'")
    device = _device(cfg.device)
    ckpts = {
        name: VQVAECheckpoint(path, key=f"bench.checkpoints.{name}") for name, path in cfg.checkpoints.items()
    }
    images, source = heldout_images(cfg, next(iter(ckpts.values())))
    extractor, real = None, None
    if cfg.inception_weights:
        from lesion_lightning.metrics.inception import INCEPTION_NAME, load_inception

        extractor = load_inception(cfg.inception_weights).to(device).eval()
        batches = (images[i : i + cfg.batch_size] for i in range(0, len(images), cfg.batch_size))
        real = extract_features(extractor, batches, device)

    per_image: dict[str, dict[str, np.ndarray]] = {}
    # side by side: the first `figure_images` held-out lesions, then each checkpoint's reconstructions
    picture_rows = [images[: cfg.figure_images]]
    rows, table = [], []
    for name, ckpt in ckpts.items():
        net = ckpt.load_module(device).net
        recon = reconstruct(net, images, cfg.batch_size, device)
        picture_rows.append(recon[: cfg.figure_images])
        mse = (recon - images).square().mean(dim=(1, 2, 3)).double().numpy()
        values = {
            "psnr": per_image_psnr(mse),
            "ssim": structural_similarity_index_measure(recon, images, data_range=1.0, reduction="none")
            .double()
            .numpy(),
            "sharpness": sharpness_ratio(recon, images, cfg.sharpness_cutoff).numpy(),
        }
        per_image[name] = values
        row = {
            "name": name,
            "first_stage": ckpt.first_stage,
            "grid": list(net.latent_shape(tuple(images.shape[-2:]))),
            "checkpoint": str(ckpt.path),
            "n": len(images),
        }
        for key, vals in values.items():
            stats = _interval(vals, cfg.num_bootstrap)
            row[key], row[f"{key}_ci"] = stats.value, stats.interval.to_json()
        if extractor is not None:
            batches = (recon[i : i + cfg.batch_size] for i in range(0, len(recon), cfg.batch_size))
            fake = extract_features(extractor, batches, device)
            fid = set_metrics(
                real,
                fake,
                feature_extractor=INCEPTION_NAME,
                kid_subset_size=min(100, len(images) // 2),
                num_bootstrap=100,
                device=device,
            )
            row.update(
                rfid=fid["fid"],
                rfid_ci=fid["fid_ci"],
                rfid_reliable=fid["reliable"],
                rfid_extractor=INCEPTION_NAME,
            )
        rows.append(row)
        table.append(
            {
                "name": name,
                "grid": "x".join(map(str, row["grid"])),
                "psnr_dB": row["psnr"],
                "psnr_ci": row["psnr_ci"],
                "ssim": row["ssim"],
                "sharpness": row["sharpness"],
                "sharp_ci": row["sharpness_ci"],
                **({"rfid": row["rfid"], "rfid_ci": row["rfid_ci"]} if "rfid" in row else {}),
            }
        )

    ratios, comparisons = {}, []
    by_name = {r["name"]: r for r in rows}
    for base, other in cfg.pairs:
        if base not in by_name or other not in by_name:
            raise ValueError(f"bench.pairs: [{base}, {other}] names a checkpoint not in bench.checkpoints")
        comp = {"baseline": base, "other": other}
        for key in ("psnr", "ssim"):
            d = _paired_difference(per_image[base][key], per_image[other][key], cfg.num_bootstrap)
            comp[f"{key}_diff"], comp[f"{key}_diff_ci"] = d.value, d.interval.to_json()
        comp["sharpness_ratio"] = by_name[other]["sharpness"] / by_name[base]["sharpness"]
        ratios[f"sharpness {other} / {base}"] = comp["sharpness_ratio"]
        ratios[f"PSNR {other} - {base} (dB, paired)"] = (
            f"{comp['psnr_diff']:.3g} [{comp['psnr_diff_ci'][0]:.3g}, {comp['psnr_diff_ci'][1]:.3g}]"
        )
        if "rfid" in by_name[base] and math.isfinite(by_name[base]["rfid"]) and by_name[base]["rfid"] > 0:
            comp["rfid_ratio"] = by_name[other]["rfid"] / by_name[base]["rfid"]
            ratios[f"rFID {other} / {base}"] = comp["rfid_ratio"]
        comparisons.append(comp)

    picture = None
    if cfg.figure_images > 0:
        grid = make_grid(torch.cat(picture_rows), nrow=len(picture_rows[0]), padding=2, pad_value=1.0)
        picture = str(save_png(grid, f"{cfg.out_dir}/side_by_side.png"))
    notes = [
        f"{source['n']} held-out images ({source['eval_set']}), {source['image_size'][0]} px, "
        f"normalization={source['normalization']}; every metric on that [0, 1] scale, reconstructions clamped",
        "psnr/ssim/sharpness: per-image means with 95 % bootstrap intervals over images; sharpness = "
        f"HF(recon)/HF(original) above {cfg.sharpness_cutoff} cycles/px (1 = as sharp as the originals)",
    ]
    if extractor is not None:
        notes.append(
            f"rfid: FID(originals, reconstructions), {INCEPTION_NAME} 2048-d pool features, n={source['n']} on "
            f"both sides, interval over resampled reconstructions; "
            + (
                "UNRELIABLE (fewer than 2,048 images: biased upwards, compare within this table only)"
                if source["n"] < RELIABLE_N
                else "reliable n"
            )
        )
    else:
        notes.append("rfid skipped: set bench.inception_weights to the TF-FID Inception file")
    return {
        "rows": rows,
        "table": table,
        "comparisons": comparisons,
        "ratios": ratios,
        "source": source,
        "picture": picture,
        "picture_rows": ["original", *ckpts],
        "notes": notes,
        "settings": OmegaConf.to_container(cfg, resolve=True),
    }
