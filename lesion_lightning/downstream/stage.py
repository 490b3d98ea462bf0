"""The utility stage: the data-budget curve (arms 1, 1b, 2 at every real fraction, arm 3), scored on the
real test split (and ``external_test``), with class fidelity; writes metrics.json, table.md and utility.png."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from lesion_lightning.data.generated import GeneratedImages
from lesion_lightning.data.transforms import ImageTransform, build_augment
from lesion_lightning.downstream.curve import (
    BALANCED,
    ONLY,
    PLUS,
    REAL,
    BudgetSettings,
    TrainPlan,
    point_key,
    run_curve,
)
from lesion_lightning.downstream.plan import class_counts, samples_needed
from lesion_lightning.downstream.results import flat_metrics, log_results
from lesion_lightning.downstream.samples import gather_samples
from lesion_lightning.metrics.utility import NOISY_CLASS_SIZE, Task, class_fidelity
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.modules.classifier_module import predict_proba
from lesion_lightning.modules.classifier_training import train_classifier
from lesion_lightning.report.curve import plot_curve, utility_report_markdown
from lesion_lightning.report.plots import UTILITY_PLOT
from lesion_lightning.utils.config import plain_settings
from lesion_lightning.utils.io import atomic_write_json, atomic_write_text
from lesion_lightning.utils.labels import Classes
from lesion_lightning.utils.runtime import pick_device

log = logging.getLogger(__name__)
EXTERNAL = "external"


def _images(dataset: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return (batch["image"] for batch in loader)


def check_settings(cfg: DictConfig) -> BudgetSettings:
    for key in ("steps", "batch_size", "seeds"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    fractions = OmegaConf.to_container(cfg.real_fractions, resolve=True) if cfg.real_fractions else None
    return BudgetSettings(
        fractions=tuple(fractions or ()),
        seeds=tuple(int(cfg.seed) + k for k in range(int(cfg.seeds))),
        subset_seed=int(cfg.real_subset_seed),
        synthetic_per_class=cfg.synthetic_per_class,
        synthetic_only_per_class=cfg.synthetic_only_per_class,
        resample_synthetic_per_seed=bool(cfg.resample_synthetic_per_seed),
        num_resamples=int(cfg.bootstrap.num_resamples),
        bootstrap_seed=int(cfg.bootstrap.seed),
    )


@dataclass
class Inputs:
    """The checkpoints' data module and task, or why the stage has nothing to do."""

    dm: object | None
    class_names: list[str]
    vqvae_fingerprint: str
    base: dict
    skipped: str | None


def load_inputs(cfg: DictConfig) -> Inputs:
    prior, vqvae_ckpt = PriorCheckpoint(cfg.pixelcnn_ckpt), VQVAECheckpoint(cfg.vqvae_ckpt)
    prior.check_pair(vqvae_ckpt)
    pixelcnn = prior.load_module("cpu")
    dm = vqvae_ckpt.build_datamodule(OmegaConf.to_container(cfg.get("data") or {}, resolve=True))
    class_names = list(dm.class_names)
    base = {
        "vqvae_ckpt": str(Path(cfg.vqvae_ckpt).resolve()),
        "pixelcnn_ckpt": str(Path(cfg.pixelcnn_ckpt).resolve()),
        "settings": plain_settings(cfg),
    }
    skipped = None
    if len(class_names) < 2:
        skipped = f"the data has one class ({class_names}): there is nothing to classify"
    elif not pixelcnn.conditional:
        skipped = "the PixelCNN is unconditional: its samples carry no class (train with num_classes > 0)"
    else:
        Classes.of(prior.class_names).require_same(class_names)
    return Inputs(dm, class_names, vqvae_ckpt.fingerprint, base, skipped)


def build_pools(
    pool: dict[str, list[Path]],
    class_names: list[str],
    per_seed: dict[str, int],
    copies: int,
    transform,
    size: int,
) -> list[GeneratedImages]:
    """``copies`` disjoint pools of ``per_seed`` images per class (one per seed, or one shared)."""
    out = []
    for k in range(copies):
        files, labels = [], []
        for i, c in enumerate(class_names):
            chunk = pool[c][k * per_seed[c] : (k + 1) * per_seed[c]]
            files += chunk
            labels += [i] * len(chunk)
        out.append(GeneratedImages(files, labels, transform, image_size=size))
    return out


def run_utility(cfg: DictConfig) -> dict:
    """Train and score every arm, fraction and seed; write metrics.json, table.md, utility.png into cfg.out_dir."""
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = check_settings(cfg)
    inputs = load_inputs(cfg)
    if inputs.skipped:
        results = {**inputs.base, "skipped": inputs.skipped}
        atomic_write_json(out_dir / "metrics.json", results)
        print(f"utility skipped: {inputs.skipped}")
        return results
    dm, class_names = inputs.dm, inputs.class_names
    task = Task(tuple(class_names))
    hp = dm.hparams
    num_workers = int(hp.num_workers if cfg.num_workers is None else cfg.num_workers)
    real_train = dm.split_dataset("train", augment=True)
    real_test = dm.split_dataset(cfg.split, augment=False)
    train_counts = class_counts(real_train.labels, class_names)
    test_counts = class_counts(real_test.labels, class_names)
    if min(train_counts.values()) == 0:
        raise ValueError(f"the train split lacks a class ({train_counts}); the classifiers cannot learn it")

    # ---- generated images: one pool per seed (resample_synthetic_per_seed) or one shared
    per_seed, planned = samples_needed(train_counts, settings)
    copies = len(settings.seeds) if settings.resample_synthetic_per_seed else 1
    needed = {c: n * copies for c, n in per_seed.items()}
    pool, sample_info = gather_samples(cfg, class_names, needed, out_dir, inputs.vqvae_fingerprint)
    train_tf = ImageTransform(build_augment(hp.augment), hp.normalization)
    size = int(hp.image_size)
    pools = build_pools(pool, class_names, per_seed, copies, train_tf, size)
    fidelity_set = build_pools(pool, class_names, per_seed, 1, ImageTransform(None, hp.normalization), size)[
        0
    ]

    # ---- test sets: the real split, and the external folder if given
    tests = {cfg.split: (real_test, torch.as_tensor(real_test.labels, dtype=torch.long))}
    external_info = None
    if cfg.external_test:
        from lesion_lightning.downstream.external import external_test_set

        ext, external_info = external_test_set(cfg.external_test, hp, class_names, out_dir / "external_cache")
        tests[EXTERNAL] = (ext, torch.as_tensor(ext.labels, dtype=torch.long))

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    full = max(settings.fractions)

    def fit(dataset, sampler, seed: int, name: str):
        """(model, trainer): the trainer saves arm (1)'s classifiers in the hook."""
        return train_classifier(
            dataset,
            cfg.model,
            class_names,
            hp.normalization,
            size,
            cfg.steps,
            cfg.batch_size,
            seed,
            num_workers,
            trainer_cfg,
            out_dir / "train_logs",
            name,
            sampler=sampler,
        )

    def predict(fitted, dataset) -> torch.Tensor:
        return predict_proba(fitted[0], _images(dataset, cfg.batch_size, num_workers))

    def hook(plan: TrainPlan, k: int, fitted) -> dict:
        """Arm (1) on the full budget: keep the classifier, and score the generated samples (fidelity)."""
        if plan.key != point_key(REAL, full):
            return {}
        ckpt = out_dir / "classifiers" / f"real_seed{settings.seeds[k]}.ckpt"
        fitted[1].save_checkpoint(ckpt)
        return {"fidelity": predict(fitted, fidelity_set), "checkpoint": str(ckpt.relative_to(out_dir))}

    digest_base = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "trainer": trainer_cfg,
        "vqvae": inputs.vqvae_fingerprint,
        "split": [real_test.ids, cfg.split],
        "external": external_info,
        "fidelity": [str(f) for f in fidelity_set.files],
    }
    curve, extras, probs = run_curve(
        real_train,
        tests,
        pools,
        class_names,
        settings,
        fit,
        predict,
        out_dir / "runs",
        digest_base,
        hook,
        pick_device(cfg.sampling.device),
    )
    ref_extras = extras.get(point_key(REAL, full), [])
    missing_ckpt = [e for e in ref_extras if not (out_dir / e.get("checkpoint", "missing")).is_file()]
    if missing_ckpt:
        raise RuntimeError(
            f"arm (1) classifiers missing under {out_dir / 'classifiers'}: delete {out_dir / 'runs'} and rerun"
        )
    classifiers = [e["checkpoint"] for e in ref_extras]
    main = curve["tests"][cfg.split]
    fidelity = class_fidelity(
        [e["fidelity"] for e in ref_extras],
        torch.as_tensor(fidelity_set.labels, dtype=torch.long),
        probs[cfg.split][point_key(REAL, full)],  # the same classifiers on the real test split
        tests[cfg.split][1],
        task,
        int(cfg.bootstrap.num_resamples),
        int(cfg.bootstrap.seed),
    )
    arms, differences = full_budget_view(main, full)
    notes = _notes(cfg, test_counts, main, pool, needed, class_names, settings, external_info)
    results = {
        **inputs.base,
        "split": cfg.split,
        "model": str(cfg.model.net.name),
        "task": {
            "class_names": class_names,
            "melanoma_vs_rest": task.melanoma is not None,
            "metrics": list(task.metrics),
        },
        "seeds": list(settings.seeds),
        "num_resamples": settings.num_resamples,
        "interval": curve["interval"],
        "data": {"train": train_counts, "test": test_counts, "describe": dm.describe()},
        "external_test": external_info,
        "samples": {
            **sample_info,
            "planned": planned,
            "resample_synthetic_per_seed": settings.resample_synthetic_per_seed,
        },
        "arms": arms,
        "differences": differences,
        "curve": curve,
        "fidelity": fidelity,
        "classifiers": classifiers,
        "notes": notes,
        "seconds": time.perf_counter() - start,
    }
    results["metrics"] = flat_metrics(results)
    atomic_write_json(out_dir / "metrics.json", results)
    table = "\n".join(utility_report_markdown(results)) + "\n"
    atomic_write_text(out_dir / "table.md", table)
    plot_curve([("this run", results)], out_dir / UTILITY_PLOT)
    print("\n## Downstream utility: do the generated lesions help?\n\n" + table)
    print(f"utility: {out_dir / 'metrics.json'} ({results['seconds']:.0f} s)")
    log_results(cfg, results, out_dir)
    return results


def full_budget_view(section: dict, full: float) -> tuple[dict, dict]:
    """The curve's full-budget points as the arms table (arms 1, 1b, 2, 3) and its differences."""
    points = section["points"]
    arms = {}
    for arm in (REAL, BALANCED, PLUS, ONLY):
        key = point_key(arm, None if arm == ONLY else full)
        if key in points:
            arms[arm] = {k: points[key][k] for k in ("mean", "sd", "mean_ci", "per_seed", "train_size")}
    differences = {}
    for row in section["differences"]:
        if row["fraction"] in (full, None):
            differences[f"{row['arm']} - {row['reference']}"] = row["metrics"]
    return arms, differences


def _notes(cfg, test_counts, section, pool, needed, class_names, settings, external_info) -> list[str]:
    notes = []
    small = {c: n for c, n in test_counts.items() if n < NOISY_CLASS_SIZE}
    if small:
        notes.append(
            f"noisy: the {cfg.split} split has fewer than {NOISY_CLASS_SIZE} images of {small}; "
            "read the intervals, not the means"
        )
    short = {c: len(pool[c]) for c in class_names if len(pool[c]) < needed[c]}
    if short:
        notes.append(f"fewer samples than planned: {short} of {needed}")
    flat = [m for m, v in (section.get("flat_reference") or {}).items() if v]
    if flat:
        notes.append(
            f"the (1b) curve is flat on {flat}: even the smallest real fraction ({min(settings.fractions):g}) "
            "scores inside the full split's interval: either the task is too easy at every fraction or the "
            "classifiers gain nothing from more real images (too few steps), and what generated images "
            "are worth in real images is not identifiable here"
        )
    if len(settings.seeds) < 3:
        notes.append(f"{len(settings.seeds)} seed(s): the intervals' seed level is coarse (see README)")
    if external_info and external_info["dropped"]:
        notes.append(f"external test: images of classes outside the task dropped: {external_info['dropped']}")
    return notes
