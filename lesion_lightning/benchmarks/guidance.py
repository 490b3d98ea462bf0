"""Guided-sampling benchmark: what classifier-free guidance w buys in class fidelity, and costs in
speed and sample diversity, on one trained pipeline run.

For every w in ``guidance_weights`` it draws ``num_samples`` labelled samples with the cached sampler
(``samples.folder.sample_to_folder``: same seed, so the same labels drawn from the train split's class mix and
the same per-sample random streams for every w) and reports, per w:

- ``s_per_image``: the sample CLI's wall time per image (sampling + decoding + PNG writing), with the
  ratio to w = 0 measured in the same run;
- class fidelity per class (``metrics.utility.class_fidelity``): the share of a class's samples that a
  classifier trained on real images calls by their label, mean over classifiers, 95 % bootstrap
  interval over the samples. The classifiers are the utility stage's arm-(1) ones
  (``<run_dir>/utility/classifiers/real_seed*.ckpt``) when that stage ran, else one ClassifierModule
  trained here on the real train split (``modules.classifier_training.train_classifier``). The ``real test images``
  row is the same classifiers' recall on the real test split: the ceiling a perfect sampler reaches;
- FID (95 % bootstrap interval over the samples) / precision / recall against the real test split
  (``metrics.sample_quality.generation_metrics``), with n, the feature extractor and the reliability flag
  (< 2,048 generated: unreliable). Inception features need local weights (``eval.inception_weights``);
  without them a fixed random-convolution stand-in is used and named as such: its distances compare the
  weights with one another on this run, not with published FID.

Without ``run_dir`` the quickstart pipeline (VQ-VAE, encode, PixelCNN with condition dropout) is trained
first into ``<out_dir>/pipeline`` (CPU minutes).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lesion_lightning.data.generated import SamplesFolder
from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.metrics.generation import build_inception, read_images, sample_files
from lesion_lightning.metrics.sample_quality import generation_metrics
from lesion_lightning.metrics.utility import Task, class_fidelity
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint, load_classifier
from lesion_lightning.modules.classifier_module import ClassifierModule, predict_proba
from lesion_lightning.modules.classifier_training import train_classifier
from lesion_lightning.samples.config import sample_config as base_sample_config
from lesion_lightning.samples.folder import sample_to_folder
from lesion_lightning.utils.config import compose_config
from lesion_lightning.utils.labels import Classes
from lesion_lightning.utils.run_folder import RunFolder
from lesion_lightning.utils.runtime import pick_device

log = logging.getLogger(__name__)
CONFIG = "conf/bench/guidance.yaml"


def guidance_weights(values) -> list[float]:
    weights = list(values) if isinstance(values, list | tuple) or OmegaConf.is_list(values) else None
    if not weights or any(
        isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0
        for w in weights
    ):
        raise SystemExit(
            f"{CONFIG}: guidance_weights must be a non-empty list of numbers >= 0, got {values!r}"
        )
    return [float(w) for w in weights]


def train_quickstart(run_dir: Path, overrides: list[str]) -> Path:
    """The quickstart's VQ-VAE, index dataset and prior through the pipeline CLI (resumes if interrupted)."""
    cmd = [
        sys.executable,
        "-m",
        "lesion_lightning.pipeline",
        "preset=quickstart",
        "stages=[vqvae,encode,pixelcnn]",
        "log_with=none",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    log.info("no bench.run_dir: training the quickstart pipeline into %s", run_dir)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"training the quickstart pipeline into {run_dir} failed (its output is above)")
    return run_dir


def sample_config(
    cfg: DictConfig, prior: Path, vqvae: Path, weight: float, out_dir: Path, num_samples: int | None = None
) -> DictConfig:
    """conf/sample.yaml with this benchmark's settings, as `python -m lesion_lightning.sample` would get."""
    keys = ("batch_size", "label_distribution", "temperature", "top_k", "top_p", "seed", "device")
    return base_sample_config(
        **{k: cfg[k] for k in keys},
        num_samples=int(num_samples or cfg.num_samples),
        pixelcnn_ckpt=str(prior),
        vqvae_ckpt=str(vqvae),
        label=None,
        guidance=weight,
        sampler="cached",
        out_dir=str(out_dir),
        overwrite=True,
    )


def real_classifiers(
    cfg: DictConfig, run_dir: Path, dm, class_names: list[str], out_dir: Path
) -> tuple[list[ClassifierModule], dict]:
    """The utility stage's arm-(1) classifiers of this run if there are any, else one trained here."""
    found = sorted(RunFolder(run_dir).utility_classifiers.glob("real_seed*.ckpt"))
    if found and cfg.classifier.reuse_utility:
        models = [load_classifier(path) for path in found]
        for path, model in zip(found, models, strict=True):
            if list(model.hparams.class_names) != class_names:
                raise SystemExit(
                    f"{path} classifies {list(model.hparams.class_names)}, the run's data has {class_names}; "
                    "set bench.classifier.reuse_utility=false to train one here"
                )
        return models, {
            "source": "the utility stage's arm-(1) classifiers (real train split)",
            "checkpoints": [str(p) for p in found],
            "model": models[0].hparams.net["name"],
        }
    c = cfg.classifier
    # the model group as the utility command composes it (conf/model/<name>.yaml)
    model_cfg = compose_config("utility", {"model": c.model}).model
    hp = dm.hparams
    model, trainer = train_classifier(
        dm.split_dataset("train", augment=True),
        model_cfg,
        class_names,
        hp.normalization,
        int(hp.image_size),
        int(c.steps),
        int(c.batch_size),
        int(c.seed),
        int(cfg.num_workers),
        {"accelerator": "cpu" if pick_device(cfg.device).type == "cpu" else "auto", "devices": 1},
        out_dir / "classifier_logs",
        "real",
    )
    ckpt = out_dir / "classifier" / "real.ckpt"
    trainer.save_checkpoint(ckpt)
    return [model], {
        "source": f"trained here on the real train split ({c.steps} steps; the run has no utility classifiers)",
        "checkpoints": [str(ckpt)],
        "model": str(c.model),
    }


def feature_extractor(cfg: DictConfig, device: torch.device) -> tuple[torch.nn.Module, str, bool]:
    """(module, name, is_inception): Inception from local weights, else the configured stand-in."""
    if cfg.eval.inception_weights:
        module = build_inception(2048, cfg.eval.inception_weights, allow_download=False)
        return module.to(device), "inception-v3-compat/2048", True
    module = hydra.utils.instantiate(cfg.eval.feature_extractor)
    if not isinstance(module, torch.nn.Module):
        raise SystemExit(
            f"{CONFIG}: eval.feature_extractor must build an nn.Module, got {type(module).__name__}"
        )
    name = str(cfg.eval.feature_extractor._target_).rsplit(".", 1)[-1]
    if hasattr(module, "num_features"):
        name += f"/{module.num_features}"
    return module.to(device).eval(), name, False


def _with_interval(value, interval) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def display_row(row: dict, class_names: list[str]) -> dict:
    """One console-table row: value [95 % interval] per class and for FID, n beside."""
    out: dict = {"w": row["guidance"] if isinstance(row["guidance"], str) else f"{row['guidance']:g}"}
    if "s_per_image" in row:
        out["s/image"] = row["s_per_image"]
    for name in class_names:
        out[f"fidelity {name} (n)"] = (
            f"{_with_interval(row[f'fidelity_{name}'], row[f'fidelity_{name}_ci'])} ({row[f'n_{name}']})"
        )
    if "fid" in row:
        out["FID [95% CI]"] = _with_interval(row["fid"], row["fid_ci"])
        out["precision"] = "-" if row["precision"] is None else f"{row['precision']:.3g}"
        out["recall"] = "-" if row["recall"] is None else f"{row['recall']:.3g}"
        out["n gen / real"] = f"{row['n_generated']} / {row['n_real']}"
    return out


def per_weight_generation(per_weight: dict) -> list[dict]:
    return [entry["generation"] for entry in per_weight.values()]


def _loader(dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return (batch["image"] for batch in loader)


def open_run(cfg: DictConfig, out_dir: Path, weights: list[float]):
    """(run folder, prior checkpoint, its VQ-VAE, the VQ-VAE's datamodule), checked for guidance."""
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
    else:
        run_dir = train_quickstart(out_dir / "pipeline", list(cfg.pipeline_overrides))
    prior_path = RunFolder(run_dir).checkpoint("pixelcnn")
    if not prior_path.is_file():
        raise SystemExit(
            f"bench.run_dir={run_dir}: no prior checkpoint ({prior_path}); pass the folder of a finished "
            "`python -m lesion_lightning.pipeline` run, or bench.run_dir=null to train the quickstart here"
        )
    prior = PriorCheckpoint(prior_path)
    # the VQ-VAE that encoded the prior's training data (its best checkpoint may be a later one)
    recorded = Path(prior.vqvae_path) if prior.vqvae_path else None
    vqvae_path = recorded if recorded and recorded.is_file() else RunFolder(run_dir).checkpoint("vqvae")
    vqvae = VQVAECheckpoint(vqvae_path)
    prior.check_pair(vqvae)
    net = prior.load_module("cpu").net
    if not net.num_classes:
        raise SystemExit(f"{prior_path} is an unconditional prior: guidance needs class labels")
    if any(weights) and not net.null_class:
        raise SystemExit(
            f"{prior_path} was trained without condition dropout (no 'no class' label), so guidance > 0 is "
            "impossible; retrain the prior with pixelcnn.model.cond_dropout=0.1 (the quickstart sets it) or "
            "use bench.guidance_weights=[0]"
        )
    dm = vqvae.build_datamodule(OmegaConf.to_container(cfg.get("data") or {}, resolve=True))
    class_names = list(dm.class_names)
    try:
        Classes.of(prior.class_names).require_same(class_names, "pass a run whose stages belong together")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return run_dir, prior_path, vqvae_path, dm


@dataclass
class Judges:
    """What every weight's samples are measured with: the classifiers (and their real-test scores),
    the feature extractor and the real split."""

    classifiers: list[ClassifierModule]
    real_probs: list[torch.Tensor]
    test_labels: torch.Tensor
    real_test: object
    task: Task
    class_names: list[str]
    extractor: torch.nn.Module
    extractor_name: str
    eval_cfg: DictConfig
    resamples: int
    seed: int
    bs: int
    workers: int
    device: torch.device


def measure_weight(j: Judges, w: float, samples_dir: Path) -> tuple[dict, dict, dict]:
    """(table row, bench.json per_weight entry, class fidelity) of one weight's samples."""
    drawn = SamplesFolder.read(samples_dir)
    files = sample_files(samples_dir)
    labels = torch.as_tensor(drawn.class_indices(j.class_names), dtype=torch.long)
    probs = [predict_proba(m, read_images(files, j.bs)) for m in j.classifiers]
    fidelity = class_fidelity(probs, labels, j.real_probs, j.test_labels, j.task, j.resamples, j.seed)
    generation = generation_metrics(
        j.extractor,
        j.extractor_name,
        files,
        j.real_test,
        j.class_names,
        j.eval_cfg,
        samples_dir=samples_dir,
        batch_size=j.bs,
        num_workers=j.workers,
        seed=j.seed,
        device=j.device,
    )
    row: dict = {"guidance": w, "s_per_image": float(drawn.seconds_per_image)}
    for name, entry in fidelity.items():
        row[f"fidelity_{name}"] = entry["generated_accuracy"]
        row[f"fidelity_{name}_ci"] = entry["generated_accuracy_ci"]
        row[f"n_{name}"] = entry["n_generated"]
    row.update({k: generation.get(k) for k in ("fid", "fid_ci", "precision", "recall")})
    row.update(
        {
            "n_generated": generation["n_generated"],
            "n_real": generation["n_real"],
            "extractor": j.extractor_name,
            "reliable": bool(generation["reliable"]),
        }
    )
    entry = {
        "samples_dir": str(samples_dir),
        "fidelity": fidelity,
        "generation": generation,
        "label_counts": {n: int((labels == i).sum()) for i, n in enumerate(j.class_names)},
    }
    return row, entry, fidelity


def run(cfg: DictConfig) -> dict:
    weights = guidance_weights(cfg.guidance_weights)
    if not isinstance(cfg.num_samples, int) or cfg.num_samples < 2:
        raise SystemExit(f"{CONFIG}: num_samples must be an integer >= 2, got {cfg.num_samples!r}")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir, prior_path, vqvae_path, dm = open_run(cfg, out_dir, weights)
    class_names = list(dm.class_names)
    task = Task(tuple(class_names))
    device = pick_device(cfg.device)
    bs, workers = int(cfg.eval_batch_size), int(cfg.num_workers)

    classifiers, classifier_info = real_classifiers(cfg, run_dir, dm, class_names, out_dir)
    real_test = dm.split_dataset(cfg.split, augment=False)
    test_labels = torch.as_tensor(real_test.labels, dtype=torch.long)
    real_probs = [predict_proba(m, _loader(real_test, bs, workers)) for m in classifiers]
    extractor, extractor_name, inception = feature_extractor(cfg, device)
    resamples, seed = int(cfg.fidelity_resamples), int(cfg.seed)

    # an untimed warm-up draw, so the first timed weight does not pay for one-off allocations
    warmup = sample_to_folder(sample_config(cfg, prior_path, vqvae_path, max(weights), out_dir / "warmup", 8))
    shutil.rmtree(warmup)
    judges = Judges(
        classifiers,
        real_probs,
        test_labels,
        real_test,
        task,
        class_names,
        extractor,
        extractor_name,
        cfg.eval,
        resamples,
        seed,
        bs,
        workers,
        device,
    )
    rows, per_weight, fidelity = [], {}, {}
    for w in weights:
        samples_dir = sample_to_folder(
            sample_config(cfg, prior_path, vqvae_path, w, out_dir / f"samples_w{w:g}")
        )
        row, per_weight[f"{w:g}"], fidelity = measure_weight(judges, w, samples_dir)
        rows.append(row)
    # the same classifiers on real test images: what a sampler whose lesions pass for real ones reaches
    reference = {"guidance": f"real {cfg.split} images"}
    for name, entry in fidelity.items():
        reference[f"fidelity_{name}"] = entry["real_test_accuracy"]
        reference[f"fidelity_{name}_ci"] = entry["real_test_accuracy_ci"]
        reference[f"n_{name}"] = entry["n_real_test"]
    rows.append(reference)

    base = rows[0]["s_per_image"]
    ratios = {f"s/image w={r['guidance']:g} / w={weights[0]:g}": r["s_per_image"] / base for r in rows[1:-1]}
    notes = [
        f"prior {prior_path}; {len(weights)} weights x {cfg.num_samples} samples, seed {seed}, "
        f"labels drawn from the train split's class mix ({cfg.label_distribution})",
        f"class fidelity: {classifier_info['source']}, model {classifier_info['model']}; "
        "share of a class's samples classified as that class, mean over classifiers, 95 % CI over samples",
        f"FID (95 % CI, bootstrap over samples) / precision / recall vs the real {cfg.split} split "
        f"(n_real={rows[0]['n_real']}) on {extractor_name} features",
    ]
    notes.append(
        "s/image: the sample CLI's wall time (sampling, decoding and PNG writing; only sampling depends on w), "
        "after an untimed warm-up draw; `bench sampler` times the guided step itself"
    )
    if not inception:
        notes.append(
            f"{extractor_name} is a fixed random-convolution stand-in (no eval.inception_weights): its FID "
            "compares the guidance weights with one another on this run only, never with published FID"
        )
    skipped = {r.get("precision_recall_skipped") for r in per_weight_generation(per_weight)} - {None}
    notes += [f"precision / recall skipped: {why}" for why in sorted(skipped)]
    if int(cfg.num_samples) < RELIABLE_N:
        notes.append(f"unreliable FID: < {RELIABLE_N} generated images per weight (reliable=false)")
    return {
        "rows": rows,
        "table": [display_row(r, class_names) for r in rows],
        "ratios": ratios,
        "notes": notes,
        "run_dir": str(run_dir),
        "pixelcnn_ckpt": str(prior_path),
        "vqvae_ckpt": str(vqvae_path),
        "class_names": class_names,
        "classifier": classifier_info,
        "feature_extractor": extractor_name,
        "per_weight": per_weight,
    }
