"""The utility stage: train and score every arm and seed, compare them on the real test split, write
metrics.json, table.md and utility.png."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lesion_lightning.data.generated import GeneratedImages
from lesion_lightning.data.transforms import ImageTransform, build_augment
from lesion_lightning.downstream.plan import ARMS, REFERENCE, _class_counts, synthetic_plan
from lesion_lightning.downstream.results import flat_metrics, log_results
from lesion_lightning.downstream.samples import gather_samples
from lesion_lightning.metrics.utility import NOISY_CLASS_SIZE, Task, class_fidelity, compare_arms
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.modules.classifier_module import predict_proba
from lesion_lightning.modules.classifier_training import train_classifier
from lesion_lightning.report.plots import UTILITY_PLOT, plot_utility
from lesion_lightning.report.utility_tables import utility_markdown
from lesion_lightning.utils.config import plain_settings
from lesion_lightning.utils.io import atomic_write, atomic_write_json, atomic_write_text
from lesion_lightning.utils.labels import Classes
from lesion_lightning.utils.runtime import pick_device

log = logging.getLogger(__name__)


def _images(dataset: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return (batch["image"] for batch in loader)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """What the arms train and are tested on: the real splits, the labelled samples, the datasets."""

    class_names: list[str]
    task: Task
    real_test: Dataset
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    added: dict[str, int]
    only: dict[str, int]
    needed: dict[str, int]
    pool: dict[str, list[Path]]
    sample_info: dict
    arm_data: dict[str, tuple[Dataset | None, GeneratedImages | None]]
    fidelity_set: GeneratedImages
    normalization: str
    image_size: int
    num_workers: int


@dataclass
class ArmRuns:
    """Every (arm, seed)'s test probabilities, the reference arm's on the generated samples, and what
    each arm trained on."""

    test_probs: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {a: [] for a in ARMS})
    fid_probs: list[torch.Tensor] = field(default_factory=list)
    arms_info: dict = field(default_factory=dict)
    classifiers: list[str] = field(default_factory=list)


def run_utility(cfg: DictConfig) -> dict:
    """Train and score every arm and seed; write metrics.json, table.md, utility.png into cfg.out_dir."""
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _validate(cfg)
    prior, vqvae_ckpt = PriorCheckpoint(cfg.pixelcnn_ckpt), VQVAECheckpoint(cfg.vqvae_ckpt)
    prior.check_pair(vqvae_ckpt)
    dm = vqvae_ckpt.build_datamodule(OmegaConf.to_container(cfg.get("data") or {}, resolve=True))
    base = {
        "vqvae_ckpt": str(Path(cfg.vqvae_ckpt).resolve()),
        "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()),
        "settings": plain_settings(cfg),
    }
    skipped = _why_skipped(prior, list(dm.class_names))
    if skipped:
        results = {**base, "skipped": skipped}
        atomic_write_json(out_dir / "metrics.json", results)
        print(f"utility skipped: {skipped}")
        return results
    plan = plan_arms(cfg, dm, out_dir, vqvae_ckpt.fingerprint)
    runs = train_arms(cfg, plan, out_dir, vqvae_ckpt.fingerprint)
    comparison, fidelity = compare(cfg, plan, runs)
    results = {
        **base,
        "split": cfg.split,
        "model": str(cfg.model.net.name),
        "task": {
            "class_names": plan.class_names,
            "melanoma_vs_rest": plan.task.melanoma is not None,
            "metrics": list(plan.task.metrics),
        },
        "seeds": _seeds(cfg),
        "num_resamples": comparison["num_resamples"],
        "data": {"train": plan.train_counts, "test": plan.test_counts, "describe": dm.describe()},
        "samples": {
            **plan.sample_info,
            "planned": {"real_plus_synthetic": plan.added, "synthetic_only": plan.only},
        },
        "arms": comparison["arms"],
        "differences": comparison["differences"],
        "fidelity": fidelity,
        "classifiers": runs.classifiers,
        "notes": notes(cfg, plan),
        "seconds": time.perf_counter() - start,
    }
    results["metrics"] = flat_metrics(results)
    write_results(results, out_dir)
    log_results(cfg, results, out_dir)
    return results


# ------------------------------------------------------------------------------------------ steps
def _validate(cfg: DictConfig) -> None:
    for key in ("steps", "batch_size", "seeds"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")


def _why_skipped(prior: PriorCheckpoint, class_names: list[str]) -> str | None:
    """Why there is nothing to compare (None: go on); a prior of other classes is an error."""
    if len(class_names) < 2:
        return f"the data has one class ({class_names}): there is nothing to classify"
    if not prior.load_module("cpu").conditional:
        return "the PixelCNN is unconditional: its samples carry no class (train with num_classes > 0)"
    Classes.of(prior.class_names).require_same(class_names)
    return None


def _seeds(cfg: DictConfig) -> list[int]:
    return [int(cfg.seed) + k for k in range(int(cfg.seeds))]


def plan_arms(cfg: DictConfig, dm, out_dir: Path, vqvae_fingerprint: str) -> Plan:
    """The real splits, how many samples per class each arm gets, the samples themselves, the datasets."""
    class_names = list(dm.class_names)
    hp = dm.hparams
    real_train = dm.split_dataset("train", augment=True)
    real_test = dm.split_dataset(cfg.split, augment=False)
    train_counts = _class_counts(real_train.labels, class_names)
    test_counts = _class_counts(real_test.labels, class_names)
    if min(train_counts.values()) == 0:
        raise ValueError(f"the train split lacks a class ({train_counts}); the classifiers cannot learn it")
    added, only = synthetic_plan(train_counts, cfg.synthetic_per_class, cfg.synthetic_only_per_class)
    needed = {c: max(added[c], only[c]) for c in class_names}
    pool, sample_info = gather_samples(cfg, class_names, needed, out_dir, vqvae_fingerprint)

    train_tf = ImageTransform(build_augment(hp.augment), hp.normalization)
    size = int(hp.image_size)

    def generated(counts: dict[str, int], transform: ImageTransform) -> GeneratedImages:
        files = [f for c in class_names for f in pool[c][: counts[c]]]
        labels = [i for i, c in enumerate(class_names) for _ in pool[c][: counts[c]]]
        return GeneratedImages(files, labels, transform, image_size=size)

    return Plan(
        class_names=class_names,
        task=Task(tuple(class_names)),
        real_test=real_test,
        train_counts=train_counts,
        test_counts=test_counts,
        added=added,
        only=only,
        needed=needed,
        pool=pool,
        sample_info=sample_info,
        arm_data={
            "real": (real_train, None),
            "real_plus_synthetic": (real_train, generated(added, train_tf)),
            "synthetic_only": (None, generated(only, train_tf)),
        },
        fidelity_set=generated(needed, ImageTransform(None, hp.normalization)),
        normalization=hp.normalization,
        image_size=size,
        num_workers=int(hp.num_workers if cfg.num_workers is None else cfg.num_workers),
    )


def train_arms(cfg: DictConfig, plan: Plan, out_dir: Path, vqvae_fingerprint: str) -> ArmRuns:
    """Every arm for every seed, each (arm, seed) cached in <out>/runs/ under a digest of its inputs."""
    runs = ArmRuns()
    for arm in ARMS:
        real_part, synth_part = plan.arm_data[arm]
        parts = [p for p in (real_part, synth_part) if p is not None and len(p) > 0]
        dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        runs.arms_info[arm] = {
            "train_size": {
                "real": len(real_part) if real_part is not None else 0,
                "synthetic": len(synth_part) if synth_part is not None else 0,
            },
            "synthetic_per_class": (
                {
                    c: min(len(plan.pool[c]), n)
                    for c, n in (plan.added if arm == "real_plus_synthetic" else plan.only).items()
                }
                if synth_part is not None
                else {}
            ),
        }
        for seed in _seeds(cfg):
            inputs = {
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "steps": cfg.steps,
                "batch_size": cfg.batch_size,
                "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
                "vqvae": vqvae_fingerprint,
                "split": [plan.real_test.ids, cfg.split],
                "train": runs.arms_info[arm],
                "files": [str(f) for f in getattr(synth_part, "files", [])],
                "fidelity": [str(f) for f in plan.fidelity_set.files],
                "seed": seed,
            }
            run_name = f"{arm}_seed{seed}"
            cached = _train_or_reuse(cfg, plan, arm, seed, dataset, _digest(inputs), out_dir)
            runs.test_probs[arm].append(cached["test"])
            if arm == REFERENCE:
                runs.fid_probs.append(cached["fidelity"])
                runs.classifiers.append(
                    str((out_dir / "classifiers" / f"{run_name}.ckpt").relative_to(out_dir))
                )
    return runs


def _train_or_reuse(
    cfg: DictConfig, plan: Plan, arm: str, seed: int, dataset: Dataset, digest: str, out_dir: Path
) -> dict:
    """One (arm, seed): its cached predictions when the digest matches, else trained and cached."""
    run_name = f"{arm}_seed{seed}"
    cache = out_dir / "runs" / f"{run_name}.pt"
    ckpt = out_dir / "classifiers" / f"{run_name}.ckpt"
    cached = torch.load(cache, weights_only=True) if cache.is_file() else None
    if cached is not None and cached["digest"] == digest and (arm != REFERENCE or ckpt.is_file()):
        log.info("[%s] cached in %s, not retrained", run_name, cache)
        return cached
    log.info("[%s] training on %d images for %d steps", run_name, len(dataset), cfg.steps)
    workers = plan.num_workers
    model, trainer = train_classifier(
        dataset,
        cfg.model,
        plan.class_names,
        plan.normalization,
        plan.image_size,
        cfg.steps,
        cfg.batch_size,
        seed,
        workers,
        OmegaConf.to_container(cfg.trainer, resolve=True),
        out_dir / "train_logs",
        run_name,
    )
    cached = {
        "digest": digest,
        "test": predict_proba(model, _images(plan.real_test, cfg.batch_size, workers)),
        "fidelity": predict_proba(model, _images(plan.fidelity_set, cfg.batch_size, workers))
        if arm == REFERENCE
        else None,
        "train_loss": float(trainer.callback_metrics.get("train/loss_epoch", float("nan"))),
    }
    if arm == REFERENCE:
        trainer.save_checkpoint(ckpt)
    atomic_write(cache, lambda tmp: torch.save(cached, tmp))
    return cached


def compare(cfg: DictConfig, plan: Plan, runs: ArmRuns) -> tuple[dict, dict]:
    """The arms and their differences to the real-only arm (paired bootstrap), and class fidelity."""
    test_labels = torch.as_tensor(plan.real_test.labels, dtype=torch.long)
    comparison = compare_arms(
        runs.test_probs,
        test_labels,
        plan.task,
        REFERENCE,
        int(cfg.bootstrap.num_resamples),
        int(cfg.bootstrap.seed),
        pick_device(cfg.sampling.device),
    )
    for arm in ARMS:
        comparison["arms"][arm].update(runs.arms_info[arm])
    fidelity = class_fidelity(
        runs.fid_probs,
        torch.as_tensor(plan.fidelity_set.labels, dtype=torch.long),
        runs.test_probs[REFERENCE],
        test_labels,
        plan.task,
        int(cfg.bootstrap.num_resamples),
        int(cfg.bootstrap.seed),
    )
    return comparison, fidelity


def notes(cfg: DictConfig, plan: Plan) -> list[str]:
    """What a reader must know before trusting the table."""
    out = []
    small = {c: n for c, n in plan.test_counts.items() if n < NOISY_CLASS_SIZE}
    if small:
        out.append(
            f"noisy: the {cfg.split} split has fewer than {NOISY_CLASS_SIZE} images of {small}; "
            "read the intervals, not the means"
        )
    if not any(plan.added.values()):
        out.append(
            "arm (2) adds no generated images (synthetic_per_class=auto and the train classes are equally "
            "large), so it repeats arm (1); set synthetic_per_class=N to add N per class"
        )
    short = {c: len(plan.pool[c]) for c in plan.class_names if len(plan.pool[c]) < plan.needed[c]}
    if short:
        out.append(f"fewer samples than planned: {short} of {plan.needed}")
    return out


def write_results(results: dict, out_dir: Path) -> None:
    """metrics.json, table.md and utility.png, and the table on the console."""
    atomic_write_json(out_dir / "metrics.json", results)
    table = "\n".join(utility_markdown(results)) + "\n"
    atomic_write_text(out_dir / "table.md", table)
    plot_utility([("this run", results)], out_dir / UTILITY_PLOT)
    print("\n## Downstream utility: do the generated lesions help?\n\n" + table)
    print(f"utility: {out_dir / 'metrics.json'} ({results['seconds']:.0f} s)")
