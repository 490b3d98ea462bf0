"""Score a trained pipeline: `python -m lesion_lightning.evaluate vqvae_ckpt=PATH [pixelcnn_ckpt=PATH] [samples_dir=DIR]`.

Sections, each computed when its inputs are given (else recorded as {"skipped": why}):
  reconstruction  VQ-VAE on the split: MSE, PSNR, SSIM, codebook usage and perplexity; reconstructions.png
  prior           PixelCNN bits/dim on the index dataset, next to a per-position marginal baseline
  generation      FID / KID (95 % bootstrap intervals, n, extractor), precision / recall, per class
  memorization    nearest training image of every sample (code space always, feature space if any)
Results go to `metrics.json` in out_dir, a console table, and the `logger` group (null by default;
logger=wandb|csv|tensorboard as for training, W&B offline without credentials).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchvision.utils import make_grid

from lesion_lightning.data.generated import SamplesFolder
from lesion_lightning.data.indices import IndexDataset, IndexManifest
from lesion_lightning.metrics.codebook import CodebookUsage
from lesion_lightning.metrics.distribution import reliability_label
from lesion_lightning.metrics.generation import (
    GenerationUnavailable,
    build_inception,
    sample_files,
)
from lesion_lightning.metrics.naming import metric_key
from lesion_lightning.metrics.prior import marginal_bits_per_grid, model_bits_per_grid
from lesion_lightning.metrics.sample_quality import generation_metrics, memorization_metrics
from lesion_lightning.metrics.stats import ci_key, mean_interval, per_image_psnr, with_interval
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.utils.config import plain_settings
from lesion_lightning.utils.instantiate import instantiate_loggers
from lesion_lightning.utils.io import atomic_write_json, save_png
from lesion_lightning.utils.runtime import pick_device
from lesion_lightning.utils.wandb_utils import finish_wandb

log = logging.getLogger(__name__)

SECTIONS = ("reconstruction", "prior", "generation", "memorization")
# section key -> flat metric name (logged as `{split}/<name>`, like the training stages' test metrics);
# a `<name>_ci` interval beside a value is logged as `<name>_ci_low` / `<name>_ci_high`
FLAT_KEYS = {
    "reconstruction": ("mse", "psnr", "ssim", "codebook_usage", "perplexity", "num_images"),
    "prior": (
        "bits_per_dim",
        "bits_per_image",
        "marginal_bits_per_dim",
        "marginal_bits_per_image",
        "num_grids",
    ),
    "generation": (
        "fid",
        "fid_inf",
        "kid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "n_generated",
        "n_real",
        "num_features",
        "reliable",
    ),
}


# ---------------------------------------------------------------------------------------------- reconstruction
@torch.no_grad()
def reconstruction_metrics(
    vqvae,
    dataset,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    num_images: int = 8,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict, torch.Tensor | None]:
    """MSE / PSNR / SSIM (means of per-image values) of clamped reconstructions and codebook usage
    over the whole dataset, with 95 % bootstrap intervals over its images.

    Returns the section dict and a picture (originals row above reconstructions row), or None.
    """
    if len(dataset) == 0:
        return {"skipped": "the split holds no images"}, None
    # per image: PSNR is the mean over images of 10 log10(1 / MSE_i), not the PSNR of the pooled MSE
    psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(device)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0, reduction="none").to(device)
    usage = CodebookUsage(vqvae.net.codebook_size).to(device)
    squared_error, num_values, image_mse = 0.0, 0, []
    originals, recons = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        x = batch["image"].to(device).float()
        out = vqvae.net(x)
        recon = out.recon.float().clamp(0, 1)  # images live in [0, 1]; score what a viewer would see
        squared_error += float((recon - x).square().sum(dtype=torch.float64))
        num_values += x.numel()
        image_mse.append((recon - x).double().square().flatten(1).mean(1).cpu())
        psnr.update(recon, x)
        ssim.update(recon, x)
        usage.update(out.indices)
        kept = sum(len(o) for o in originals)
        if kept < num_images:
            originals.append(x[: num_images - kept].cpu())
            recons.append(recon[: num_images - kept].cpu())
    stats = usage.compute()
    mse_i = torch.cat(image_mse).numpy()
    ssim_i = ssim.compute().double().cpu().numpy().reshape(-1)
    section = {
        "num_images": len(dataset),
        "mse": squared_error / num_values,
        "psnr": float(psnr.compute()),
        "ssim": float(ssim_i.mean()),
        "codebook_usage": float(stats["codebook_usage"]),
        "perplexity": float(stats["perplexity"]),
        "codebook_size": int(vqvae.net.codebook_size),
    }
    # 95 % intervals: bootstrap over the split's images (the point values stay the torchmetrics ones)
    for key, values in (("mse", mse_i), ("psnr", per_image_psnr(mse_i)), ("ssim", ssim_i)):
        section[ci_key(key)] = mean_interval(values, num_bootstrap, seed).interval.to_json()
    picture = None
    if originals:
        top, bottom = torch.cat(originals), torch.cat(recons)
        picture = make_grid(torch.cat([top, bottom]), nrow=len(top), padding=2, pad_value=1.0)
    return section, picture


# ------------------------------------------------------------------------------------------------------- prior
def prior_section(
    cfg: DictConfig,
    pixelcnn,
    vqvae_fingerprint: str,
    device: torch.device,
    prior: PriorCheckpoint | None = None,
) -> dict:
    """PixelCNN bits/dim and the per-position marginal baseline on the index dataset's split.

    `pixelcnn` is the loaded module of the `prior` checkpoint (both None without a prior)."""
    index_dir = cfg.index_dir or (prior.index_dataset if prior is not None else None)
    if not index_dir:
        return {"skipped": "no prior given: pass pixelcnn_ckpt=PATH (and/or index_dir=<encode output>)"}
    source = "index_dir" if cfg.index_dir else f"index_dataset recorded in pixelcnn_ckpt={cfg.pixelcnn_ckpt}"
    manifest = IndexManifest.read(index_dir, source)
    manifest.check_vqvae(vqvae_fingerprint, f"vqvae_ckpt={cfg.vqvae_ckpt}")
    num_codes, grid = manifest.num_codes, list(manifest.grid_size)
    split = cfg.split
    if not manifest.has_split(split):
        return {"skipped": f"the index dataset {index_dir} has no `{split}` split"}
    test = IndexDataset(index_dir, split)
    section: dict = {
        "index_dir": str(index_dir),
        "num_grids": len(test),
        "grid_size": grid,
        "num_codes": num_codes,
        "uniform_bits_per_dim": math.log2(num_codes),
    }
    notes = []
    if pixelcnn is not None:
        if list(prior.grid_size) != grid or prior.num_codes != num_codes:
            raise ValueError(
                f"pixelcnn_ckpt={cfg.pixelcnn_ckpt} models {list(prior.grid_size)} grids of "
                f"{prior.num_codes} codes, but {index_dir} holds {grid} grids of {num_codes}"
            )
        per_grid = model_bits_per_grid(pixelcnn, test, cfg.batch_size, device, cfg.num_workers)
        _bits_with_intervals(section, "bits", per_grid, grid, cfg)
    else:
        notes.append("no pixelcnn_ckpt: only the marginal baseline")
    if manifest.has_split("train"):
        train = IndexDataset(index_dir, "train")
        per_grid = marginal_bits_per_grid(
            train.indices, test.indices, num_codes, alpha=cfg.eval.marginal_smoothing
        )
        _bits_with_intervals(section, "marginal_bits", per_grid, grid, cfg)
    else:
        notes.append("no train split in the index dataset: marginal baseline not computed")
    if notes:
        section["notes"] = notes
    return section


def _bits_with_intervals(section: dict, prefix: str, per_grid, grid: list[int], cfg: DictConfig) -> None:
    """`{prefix}_per_dim` and `{prefix}_per_image` (= bits/dim x H x W: comparable across grid sizes)
    with 95 % bootstrap intervals over the split's grids."""
    estimate = mean_interval(per_grid, int(cfg.eval.bootstrap), int(cfg.seed))
    with_interval(section, f"{prefix}_per_dim", estimate)
    with_interval(section, f"{prefix}_per_image", estimate.scaled(math.prod(grid)))


# -------------------------------------------------------------------------------------------------- generation
def _feature_extractor(cfg: DictConfig, device: torch.device) -> tuple[torch.nn.Module, str]:
    custom = cfg.eval.get("feature_extractor")
    if custom:
        module = hydra.utils.instantiate(custom)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"eval.feature_extractor must build an nn.Module, got {type(module).__name__}")
        return module.to(device).eval(), str(custom.get("_target_", type(module).__name__))
    module = build_inception(
        int(cfg.eval.fid_feature),
        cfg.eval.inception_weights,
        bool(cfg.eval.allow_download),
        float(cfg.eval.download_probe_timeout),
    )
    return module.to(device), f"inception-v3-compat/{cfg.eval.fid_feature}"


def generation_section(
    cfg: DictConfig,
    real_dataset,
    vqvae_fingerprint: str,
    device: torch.device,
    class_names: list[str] | None = None,
    cache: dict | None = None,
) -> dict:
    """FID / KID / precision / recall between samples_dir's PNGs and a seeded random eval.max_real
    images of the split (all of it when null), overall and per class; see metrics.sample_quality."""
    if not cfg.samples_dir:
        return {"skipped": "no samples_dir given: pass samples_dir=<sample run dir>/samples"}
    files = sample_files(cfg.samples_dir)
    if SamplesFolder.present(cfg.samples_dir):
        SamplesFolder.read(cfg.samples_dir).check_vqvae(vqvae_fingerprint, f"vqvae_ckpt={cfg.vqvae_ckpt}")
    try:
        extractor, name = _feature_extractor(cfg, device)
        return generation_metrics(
            extractor,
            name,
            files,
            real_dataset,
            list(class_names or []),
            cfg.eval,
            samples_dir=cfg.samples_dir,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            seed=int(cfg.seed),
            device=device,
            cache=cache,
        )
    except GenerationUnavailable as err:
        log.warning("FID/KID skipped: %s", err)
        return {"skipped": str(err)}


def memorization_section(
    cfg: DictConfig,
    dm,
    prior: PriorCheckpoint | None,
    out_dir: Path,
    device: torch.device,
    cache: dict | None = None,
) -> dict:
    """Nearest training image of every sample (metrics.memorization); needs samples_dir and the index dataset."""
    if not cfg.samples_dir:
        return {"skipped": "no samples_dir given: pass samples_dir=<sample run dir>/samples"}
    index_dir = cfg.index_dir or (prior.index_dataset if prior is not None else None)
    if not IndexManifest.present(index_dir):
        return {"skipped": "no index dataset: pass index_dir=<encode output> (or pixelcnn_ckpt=PATH)"}
    return memorization_metrics(
        cfg.samples_dir,
        index_dir,
        cfg.split,
        dm.split_dataset("train", augment=False),
        cfg.eval,
        out_dir,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        seed=int(cfg.seed),
        device=device,
        cache=cache,
    )


# ----------------------------------------------------------------------------------------------------- outputs
def flat_metrics(results: dict, split: str = "test") -> dict[str, float]:
    """`{split}/psnr`, `{split}/bits_per_dim`, ... for loggers and the console (computed values only)."""
    flat = {}
    generation = results.get("generation") or {}
    for section, keys in FLAT_KEYS.items():
        for key in keys:
            values = results.get(section) or {}
            # a stand-in extractor's FID/KID/P/R carry its name (test/fid_RandomConvFeatures16)
            name = metric_key(key, generation) if section == "generation" else key
            value = values.get(key)
            if isinstance(value, int | float):
                flat[f"{split}/{name}"] = float(value)
            interval = values.get(f"{key}_ci")
            if (
                isinstance(interval, list)
                and len(interval) == 2
                and all(isinstance(v, float) for v in interval)
            ):
                flat[f"{split}/{name}_ci_low"], flat[f"{split}/{name}_ci_high"] = interval
    for name, stats in (generation.get("per_class") or {}).items():
        for key in ("fid", "kid", "n_generated", "n_real"):
            if isinstance(stats.get(key), int | float):
                flat[f"{split}/{metric_key(key, generation)}/{name}"] = float(stats[key])
    for space in ("code_space", "feature_space"):
        mem = (results.get("memorization") or {}).get(space) or {}
        if isinstance(mem.get("memorized_fraction"), float):
            flat[f"{split}/memorized_fraction_{space}"] = mem["memorized_fraction"]
            low, high = mem["memorized_fraction_ci"]
            flat[f"{split}/memorized_fraction_{space}_ci_low"] = low
            flat[f"{split}/memorized_fraction_{space}_ci_high"] = high
    return flat


def format_table(results: dict, split: str = "test") -> str:
    lines = [f"{'metric':<32} value"]
    flat = flat_metrics(results, split)
    for name, value in flat.items():
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        interval = ""
        if f"{name}_ci_low" in flat:
            interval = f"  95% CI [{flat[f'{name}_ci_low']:.4g}, {flat[f'{name}_ci_high']:.4g}]"
        lines.append(f"{name:<32} {value:.4g}{interval}")
    generation = results.get("generation") or {}
    if "fid" in generation:
        lines.append(f"{'generation':<32} {reliability_label(generation)}")
    for section in SECTIONS:
        skipped = (results.get(section) or {}).get("skipped")
        if skipped:
            lines.append(f"{section:<32} skipped: {skipped}")
    return "\n".join(lines)


def log_results(cfg: DictConfig, results: dict, out_dir: Path) -> None:
    """Send the flat metrics (and the reconstructions picture) to the `logger` group's loggers."""
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:
        return
    flat = flat_metrics(results, cfg.split)
    picture = out_dir / "reconstructions.png"
    try:
        for logger in loggers:
            logger.log_hyperparams(plain_settings(cfg))
            logger.log_metrics(flat, step=0)
            if isinstance(logger, WandbLogger):
                if picture.is_file():
                    logger.log_image(
                        f"{cfg.split}/reconstructions",
                        [str(picture)],
                        caption=["top: originals, bottom: reconstructions"],
                    )
                memorization = out_dir / "memorization.png"
                if memorization.is_file():
                    logger.log_image(
                        f"{cfg.split}/memorization",
                        [str(memorization)],
                        caption=["top: samples closest to a training image (code space), bottom: that image"],
                    )
                generation = results.get("generation") or {}
                if generation.get("feature_extractor"):  # which features every FID/KID/P/R came from
                    logger.experiment.summary[f"{cfg.split}/feature_extractor"] = generation[
                        "feature_extractor"
                    ]
                for section in SECTIONS:
                    if (results.get(section) or {}).get("skipped"):
                        logger.experiment.summary[f"{cfg.split}/{section}_skipped"] = results[section][
                            "skipped"
                        ]
            logger.save()
            logger.finalize("success")
    finally:
        finish_wandb()  # one W&B run per evaluate call, also in a multirun


def evaluate(cfg: DictConfig) -> dict:
    """Compute every section the inputs allow, write metrics.json (+ picture) into cfg.out_dir, return it."""
    if cfg.batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = pick_device(cfg.device)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    vqvae_ckpt = VQVAECheckpoint(cfg.vqvae_ckpt)
    prior, pixelcnn = None, None
    if cfg.pixelcnn_ckpt:
        prior = PriorCheckpoint(cfg.pixelcnn_ckpt)
        prior.check_pair(vqvae_ckpt)
        pixelcnn = prior.load_module(device)
    vqvae = vqvae_ckpt.load_module(device)
    vqvae_fingerprint = vqvae_ckpt.fingerprint
    dm = vqvae_ckpt.build_datamodule(OmegaConf.to_container(cfg.get("data") or {}, resolve=True))
    real_dataset = dm.split_dataset(cfg.split, augment=False)

    results: dict = {
        "vqvae_ckpt": str(Path(cfg.vqvae_ckpt).resolve()),
        "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()) if cfg.pixelcnn_ckpt else None,
        "split": cfg.split,
        "device": str(device),
    }
    log.info("Reconstruction metrics on %d %s images", len(real_dataset), cfg.split)
    results["reconstruction"], picture = reconstruction_metrics(
        vqvae,
        real_dataset,
        cfg.batch_size,
        device,
        cfg.num_workers,
        int(cfg.eval.num_reconstructions),
        int(cfg.eval.bootstrap),
        int(cfg.seed),
    )
    if picture is not None:
        save_png(picture, out_dir / "reconstructions.png")
    results["prior"] = prior_section(cfg, pixelcnn, vqvae_fingerprint, device, prior)
    features: dict = {}  # generation's features, reused by memorization's feature space
    results["generation"] = generation_section(
        cfg, real_dataset, vqvae_fingerprint, device, list(dm.class_names), features
    )
    results["memorization"] = memorization_section(cfg, dm, prior, out_dir, device, features)
    results["metrics"] = flat_metrics(results, cfg.split)
    results["settings"] = plain_settings(cfg)
    atomic_write_json(out_dir / "metrics.json", results)
    print(format_table(results, cfg.split))
    print(f"metrics: {out_dir / 'metrics.json'}")
    log_results(cfg, results, out_dir)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
