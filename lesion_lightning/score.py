"""Score images by the prior's likelihood: `python -m lesion_lightning.score pixelcnn_ckpt=PATH images=DIR`.

Every image goes through the VQ-VAE's encoder (with the data settings of its training run: image size,
resize, normalization) and the prior scores its code grid in one forward pass per batch. Written into
out_dir (a temporary folder renamed when complete):

  scores.csv        per image, most anomalous first: bits/dim under the prior, under the per-position
                    marginal baseline, and corrected = prior - baseline (see metrics/likelihood.py)
  highest.png       the num_pictures highest / lowest by bits/dim: image | reconstruction | NLL heatmap
  lowest.png
  ood_scores.csv    with ood=DIR2: the same for those images
  roc.png           with ood=DIR2: ROC of raw and corrected scores for telling ood from images
  score.json        settings, how images were conditioned, mean scores, AUROC/AUPR with 95% intervals

images=null scores a split of the VQ-VAE's own data (split=test by default).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.indices import IndexDataset, IndexManifest
from lesion_lightning.metrics.heatmap import ScoredImage, heatmap_figure, roc_figure
from lesion_lightning.metrics.likelihood import (
    baseline_nll,
    bits_per_dim,
    class_marginal_nll,
    ood_metrics,
    position_nll,
)
from lesion_lightning.metrics.prior import position_log_probs
from lesion_lightning.metrics.stats import NORMAL, Interval, put
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.utils.io import atomic_write_json, atomic_write_text
from lesion_lightning.utils.runtime import pick_device, publish_dir

log = logging.getLogger(__name__)

CONDITIONINGS = ("label", "class_marginal", "unconditional")


@dataclass
class ImageSet:
    """What gets scored: a dataset of {image, label} items, its file names, and labels the prior knows."""

    name: str  # "images" | "ood"
    source: str  # the folder, or "<split> split of <data root>"
    dataset: torch.utils.data.Dataset
    files: list[str]
    labels: list[int] | None  # prior class index per image, None when the data has none the prior knows


def _folder_set(
    name: str, key: str, folder: str, cfg: DictConfig, vqvae_ckpt: VQVAECheckpoint, prior_classes: list[str]
) -> ImageSet:
    """Every image of a folder (any layout the loaders read), preprocessed as the VQ-VAE's training data."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{key}={folder}: no such folder; pass a folder of images (any supported layout)"
        )
    overrides = {
        "root": str(path),
        "layout": "auto",
        "synthetic": None,
        "classes": None,
        "augment": None,
        # one "split" holding every image: the folder is scored, not trained on
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "cache_dir": cfg.data.cache_dir,
    }
    if cfg.data.on_bad_image:
        overrides["on_bad_image"] = cfg.data.on_bad_image
    hp = vqvae_ckpt.datamodule_settings  # preprocessing only: a new folder gets no pinned split
    hp.update(overrides)
    try:
        dm = LesionDataModule(**hp)
        dm.prepare_data()
    except (FileNotFoundError, ValueError) as err:  # the loader's message speaks of data.root: say which key
        raise type(err)(f"{key}={folder}: {err}") from err
    dataset = dm.split_dataset("train")
    return ImageSet(
        name, str(path.resolve()), dataset, list(dataset.ids), _prior_labels(dm, dataset, prior_classes)
    )


def _prior_labels(dm, dataset, prior_classes: list[str]) -> list[int] | None:
    """The dataset's labels as the prior's class indices, or None if any image's class is not the prior's."""
    names = [dm.class_names[int(i)] for i in dataset.labels]
    if not prior_classes or any(n not in prior_classes for n in names):
        return None
    return [prior_classes.index(n) for n in names]


def _split_set(cfg: DictConfig, vqvae_ckpt: VQVAECheckpoint, prior_classes: list[str]) -> ImageSet:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("on_bad_image", None)
    dm = vqvae_ckpt.build_datamodule(data)
    dataset = dm.split_dataset(cfg.split, augment=False)
    if len(dataset) == 0:
        raise ValueError(
            f"split={cfg.split} of {dm.hparams.root} holds no images; pass images=DIR or another split"
        )
    source = f"{cfg.split} split of {Path(dm.hparams.root).resolve()}"
    return ImageSet("images", source, dataset, list(dataset.ids), _prior_labels(dm, dataset, prior_classes))


def _baseline(
    cfg: DictConfig, prior: PriorCheckpoint, vqvae_fingerprint: str, device: torch.device
) -> tuple[torch.Tensor, str]:
    """(H, W, K) per-position log-probabilities of the prior's index dataset (train split), and its folder."""
    index_dir = cfg.index_dir or prior.index_dataset
    if not index_dir:
        raise ValueError(
            "the corrected score needs the prior's index dataset (its train split's per-position code "
            "frequencies); the checkpoint records none: pass index_dir=<encode output>"
        )
    manifest = IndexManifest.read(index_dir, "index_dir")  # clear error if the folder is gone
    manifest.check_vqvae(vqvae_fingerprint, "the VQ-VAE being scored with")
    if not manifest.has_split("train"):
        raise ValueError(f"index_dir={index_dir} has no train split to build the marginal baseline from")
    train = IndexDataset(index_dir, "train")
    log_p = position_log_probs(train.indices, manifest.num_codes, alpha=cfg.marginal_smoothing)
    return torch.from_numpy(log_p).float().to(device), str(index_dir)


class Scorer:
    """Codes and per-position NLL maps of image batches: VQ-VAE encode + one prior forward per batch."""

    def __init__(self, pixelcnn, vqvae, baseline: torch.Tensor, conditioning: str, device: torch.device):
        self.net, self.vqvae, self.baseline = pixelcnn.net, vqvae.net, baseline
        self.conditioning, self.device = conditioning, device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        codes = self.vqvae.encode(images.to(self.device))
        if self.conditioning == "class_marginal":
            nll = class_marginal_nll(self.net, codes)
        else:
            nll = position_nll(self.net, codes, labels.to(self.device) if labels is not None else None)
        return {"codes": codes, "nll": nll, "baseline": baseline_nll(self.baseline, codes)}

    def score_set(
        self, images: ImageSet, batch_size: int, num_workers: int
    ) -> tuple[dict[str, np.ndarray], float]:
        """Per-image bits/dim under prior and baseline, in dataset order; and images/s."""
        labels = torch.tensor(images.labels) if images.labels is not None else None
        loader = DataLoader(images.dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        prior, base, done = [], [], 0
        start = time.perf_counter()
        with tqdm(total=len(images.dataset), desc=f"scoring {images.name}", unit="img") as bar:
            for batch in loader:
                b = batch["image"].shape[0]
                out = self(batch["image"], labels[done : done + b] if self._uses_labels(labels) else None)
                prior.append(bits_per_dim(out["nll"]).cpu())
                base.append(bits_per_dim(out["baseline"]).cpu())
                done += b
                bar.update(b)
        rate = done / max(time.perf_counter() - start, 1e-9)
        prior_bits, base_bits = torch.cat(prior).double().numpy(), torch.cat(base).double().numpy()
        return {
            "bits_per_dim": prior_bits,
            "baseline_bits_per_dim": base_bits,
            "corrected": prior_bits - base_bits,
        }, rate

    def _uses_labels(self, labels) -> bool:
        return self.conditioning == "label" and labels is not None


def _choose_conditioning(cfg: DictConfig, pixelcnn, class_names: list[str], sets: list[ImageSet]) -> str:
    if not pixelcnn.conditional:
        return "unconditional"
    if cfg.conditioning == "auto":
        return "label" if all(s.labels is not None for s in sets) else "class_marginal"
    if cfg.conditioning not in ("label", "class_marginal"):
        raise ValueError(f"conditioning={cfg.conditioning!r} must be auto, label or class_marginal")
    if cfg.conditioning == "label":
        missing = [s.source for s in sets if s.labels is None]
        if missing:
            raise ValueError(
                f"conditioning=label but {missing} hold images without a class this prior knows "
                f"({class_names}); use conditioning=class_marginal"
            )
    return cfg.conditioning


def _csv(images: ImageSet, scores: dict[str, np.ndarray], conditioning: str, class_names: list[str]) -> str:
    order = np.argsort(-scores["bits_per_dim"], kind="stable")  # most anomalous first
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "file", "condition", "bits_per_dim", "baseline_bits_per_dim", "corrected"])
    for rank, i in enumerate(order, 1):
        condition = class_names[images.labels[i]] if conditioning == "label" else conditioning
        writer.writerow(
            [rank, images.files[i], condition]
            + [f"{scores[k][i]:.6f}" for k in ("bits_per_dim", "baseline_bits_per_dim", "corrected")]
        )
    return buf.getvalue()


def _pictures(scorer: Scorer, images: ImageSet, scores: dict, num: int, out: Path, conditioning: str) -> dict:
    """highest.png / lowest.png: the num most and least likely images with their NLL heatmaps."""
    order = np.argsort(-scores["bits_per_dim"], kind="stable")
    num = min(num, len(order))
    picks = {"highest": order[:num].tolist(), "lowest": order[::-1][:num].tolist()}
    rows: dict[str, list[ScoredImage]] = {}
    for which, idx in picks.items():
        batch = torch.stack([images.dataset[i]["image"] for i in idx])
        labels = torch.tensor([images.labels[i] for i in idx]) if conditioning == "label" else None
        outputs = scorer(batch, labels)
        recon = scorer.vqvae.decode_indices(outputs["codes"]).clamp(0, 1).cpu()
        nll_bits = (outputs["nll"] / math.log(2)).cpu()
        rows[which] = [
            ScoredImage(
                images.files[i],
                batch[k],
                recon[k],
                nll_bits[k],
                float(scores["bits_per_dim"][i]),
                float(scores["corrected"][i]),
            )
            for k, i in enumerate(idx)
        ]
    # one colour scale for both pictures: the 99th percentile of every shown position
    vmax = float(torch.quantile(torch.cat([r.nll_bits.flatten() for rs in rows.values() for r in rs]), 0.99))
    for which, rs in rows.items():
        title = f"{which} bits/dim of {len(order)} images, condition: {conditioning}\n{images.source}"
        heatmap_figure(rs, title, out / f"{which}.png", max(vmax, 1e-3))
    return {which: [images.files[i] for i in idx] for which, idx in picks.items()}


def _summary(scores: dict[str, np.ndarray]) -> dict:
    n = len(scores["bits_per_dim"])
    summary = {"num_images": n}
    for key, values in scores.items():
        # mean ± 1.96 SE over the images (a normal approximation, named as such in score.json)
        summary[key] = {}
        put(summary[key], "mean", float(values.mean()), Interval.normal(values))
        summary[key]["mean_ci_method"] = NORMAL
    return summary


@torch.no_grad()
def score(cfg: DictConfig) -> dict:
    """Score cfg.images (or cfg.split) and optionally cfg.ood; write the outputs; return score.json's dict."""
    device = pick_device(cfg.device)
    if cfg.batch_size < 1 or cfg.num_pictures < 0:
        raise ValueError("batch_size must be >= 1 and num_pictures >= 0")
    prior = PriorCheckpoint(cfg.pixelcnn_ckpt)
    vqvae_ckpt = prior.paired_vqvae(cfg.vqvae_ckpt)
    pixelcnn = prior.load_module(device)
    vqvae = vqvae_ckpt.load_module(device)
    baseline, index_dir = _baseline(cfg, prior, vqvae_ckpt.fingerprint, device)
    class_names = list(prior.class_names)
    prior_classes = class_names if pixelcnn.conditional else []

    if cfg.images:
        sets = [_folder_set("images", "images", cfg.images, cfg, vqvae_ckpt, prior_classes)]
    else:
        sets = [_split_set(cfg, vqvae_ckpt, prior_classes)]
    if cfg.ood:
        sets.append(_folder_set("ood", "ood", cfg.ood, cfg, vqvae_ckpt, prior_classes))
    grid = prior.grid_size
    image_size = int(sets[0].dataset[0]["image"].shape[-1])
    if tuple(vqvae.net.latent_shape(image_size)) != grid:
        raise ValueError(
            f"the VQ-VAE makes {vqvae.net.latent_shape(image_size)} grids of these images, the prior models {grid}"
        )
    conditioning = _choose_conditioning(cfg, pixelcnn, class_names, sets)
    scorer = Scorer(pixelcnn, vqvae, baseline, conditioning, device)

    out_dir = Path(cfg.out_dir)
    result: dict = {
        "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()),
        "vqvae_ckpt": str(Path(vqvae_ckpt.path).resolve()),
        "index_dataset": index_dir,
        "conditioning": conditioning,
        "grid_size": list(grid),
        "image_size": image_size,
        "device": str(device),
        "formula": "per image: mean over grid positions of -log2 p(code | codes before) (bits/dim); baseline: "
        "the same under per-position code frequencies of the train split; corrected = prior - baseline",
    }
    with publish_dir(out_dir, overwrite=cfg.overwrite, what="scores") as tmp:
        all_scores = {}
        for image_set in sets:
            scores, rate = scorer.score_set(image_set, cfg.batch_size, cfg.num_workers)
            all_scores[image_set.name] = scores
            print(
                f"{image_set.name}: {len(image_set.files)} images scored at {rate:.1f} images/s ({image_set.source})"
            )
            csv_name = "scores.csv" if image_set.name == "images" else "ood_scores.csv"
            atomic_write_text(tmp / csv_name, _csv(image_set, scores, conditioning, class_names))
            result[image_set.name] = {"source": image_set.source, "images_per_s": rate, **_summary(scores)}
        if cfg.num_pictures:
            result["images"]["pictures"] = _pictures(
                scorer, sets[0], all_scores["images"], cfg.num_pictures, tmp, conditioning
            )
        if cfg.ood:
            curves = {
                name: ood_metrics(
                    all_scores["images"][key], all_scores["ood"][key], cfg.num_bootstrap, int(cfg.seed)
                )
                for name, key in (("raw bits/dim", "bits_per_dim"), ("corrected", "corrected"))
            }
            roc_figure(
                curves,
                f"ood={Path(cfg.ood).name} vs images (n={len(sets[1].files)} vs {len(sets[0].files)})",
                tmp / "roc.png",
            )
            result["ood_detection"] = {
                "positive": "ood",
                "higher_score_means": "more anomalous",
                **{name: {k: v for k, v in m.items() if k != "roc"} for name, m in curves.items()},
            }
        result["settings"] = OmegaConf.to_container(cfg, resolve=True)
        atomic_write_json(tmp / "score.json", result)
    _print(result, out_dir)
    return result


def _print(result: dict, out_dir: Path) -> None:
    for name in ("images", "ood"):
        if name in result:
            r = result[name]
            print(
                f"{name:<7} n={r['num_images']:<5} bits/dim {r['bits_per_dim']['mean']:.4f}  "
                f"baseline {r['baseline_bits_per_dim']['mean']:.4f}  corrected {r['corrected']['mean']:+.4f}  (means)"
            )
    for name, m in (result.get("ood_detection") or {}).items():
        if isinstance(m, dict):
            ci = m.get("auroc_ci") or [float("nan")] * 2
            print(
                f"ood detection, {name}: AUROC {m['auroc']:.4f} [95% CI {ci[0]:.3f}, {ci[1]:.3f}]  AUPR {m['aupr']:.4f}"
            )
    print(f"scores: {out_dir / 'scores.csv'}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="score")
def main(cfg: DictConfig) -> None:
    score(cfg)


if __name__ == "__main__":
    main()
