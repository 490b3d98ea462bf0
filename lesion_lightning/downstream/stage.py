"""The utility stage: train and score every arm and seed, compare them on the real test split, write
metrics.json, table.md and utility.png."""

from __future__ import annotations

import hashlib
import json
import logging
import time
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
from lesion_lightning.utils.runtime import pick_device

log = logging.getLogger(__name__)


def _images(dataset: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return (batch["image"] for batch in loader)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_utility(cfg: DictConfig) -> dict:
    """Train and score every arm and seed; write metrics.json, table.md, utility.png into cfg.out_dir."""
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("steps", "batch_size", "seeds"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    prior, vqvae_ckpt = PriorCheckpoint(cfg.pixelcnn_ckpt), VQVAECheckpoint(cfg.vqvae_ckpt)
    prior.check_pair(vqvae_ckpt)
    pixelcnn = prior.load_module("cpu")
    vq_fp = vqvae_ckpt.fingerprint
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
    elif prior.class_names != class_names:
        raise ValueError(
            f"the PixelCNN was trained on classes {prior.class_names}, the VQ-VAE's data "
            f"has {class_names}: pass checkpoints from the same pipeline run"
        )
    if skipped:
        results = {**base, "skipped": skipped}
        atomic_write_json(out_dir / "metrics.json", results)
        print(f"utility skipped: {skipped}")
        return results

    task = Task(tuple(class_names))
    hp = dm.hparams
    num_workers = int(hp.num_workers if cfg.num_workers is None else cfg.num_workers)
    real_train = dm.split_dataset("train", augment=True)
    real_test = dm.split_dataset(cfg.split, augment=False)
    train_counts = _class_counts(real_train.labels, class_names)
    test_counts = _class_counts(real_test.labels, class_names)
    if min(train_counts.values()) == 0:
        raise ValueError(f"the train split lacks a class ({train_counts}); the classifiers cannot learn it")
    added, only = synthetic_plan(train_counts, cfg.synthetic_per_class, cfg.synthetic_only_per_class)
    needed = {c: max(added[c], only[c]) for c in class_names}
    pool, sample_info = gather_samples(cfg, class_names, needed, out_dir, vq_fp)

    train_tf = ImageTransform(build_augment(hp.augment), hp.normalization)
    plain_tf = ImageTransform(None, hp.normalization)
    size = int(hp.image_size)

    def generated(counts: dict[str, int], transform: ImageTransform) -> GeneratedImages:
        files = [f for c in class_names for f in pool[c][: counts[c]]]
        labels = [i for i, c in enumerate(class_names) for _ in pool[c][: counts[c]]]
        return GeneratedImages(files, labels, transform, image_size=size)

    arm_data = {
        "real": (real_train, None),
        "real_plus_synthetic": (real_train, generated(added, train_tf)),
        "synthetic_only": (None, generated(only, train_tf)),
    }
    fidelity_set = generated(needed, plain_tf)
    seeds = [int(cfg.seed) + k for k in range(int(cfg.seeds))]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    model_cfg = cfg.model
    test_labels = torch.as_tensor(real_test.labels, dtype=torch.long)
    fid_labels = torch.as_tensor(fidelity_set.labels, dtype=torch.long)

    test_probs: dict[str, list[torch.Tensor]] = {a: [] for a in ARMS}
    fid_probs: list[torch.Tensor] = []
    arms_info: dict = {}
    classifiers = []
    for arm in ARMS:
        real_part, synth_part = arm_data[arm]
        parts = [p for p in (real_part, synth_part) if p is not None and len(p) > 0]
        dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        arms_info[arm] = {
            "train_size": {
                "real": len(real_part) if real_part is not None else 0,
                "synthetic": len(synth_part) if synth_part is not None else 0,
            },
            "synthetic_per_class": (
                {
                    c: min(len(pool[c]), n)
                    for c, n in (added if arm == "real_plus_synthetic" else only).items()
                }
                if synth_part is not None
                else {}
            ),
        }
        for seed in seeds:
            run_name = f"{arm}_seed{seed}"
            digest = _digest(
                {
                    "model": OmegaConf.to_container(model_cfg, resolve=True),
                    "steps": cfg.steps,
                    "batch_size": cfg.batch_size,
                    "trainer": trainer_cfg,
                    "vqvae": vq_fp,
                    "split": [real_test.ids, cfg.split],
                    "train": arms_info[arm],
                    "files": [str(f) for f in getattr(synth_part, "files", [])],
                    "fidelity": [str(f) for f in fidelity_set.files],
                    "seed": seed,
                }
            )
            cache = out_dir / "runs" / f"{run_name}.pt"
            ckpt = out_dir / "classifiers" / f"{run_name}.ckpt"
            cached = torch.load(cache, weights_only=True) if cache.is_file() else None
            if cached is not None and cached["digest"] == digest and (arm != REFERENCE or ckpt.is_file()):
                log.info("[%s] cached in %s, not retrained", run_name, cache)
            else:
                log.info("[%s] training on %d images for %d steps", run_name, len(dataset), cfg.steps)
                model, trainer = train_classifier(
                    dataset,
                    model_cfg,
                    class_names,
                    hp.normalization,
                    size,
                    cfg.steps,
                    cfg.batch_size,
                    seed,
                    num_workers,
                    trainer_cfg,
                    out_dir / "train_logs",
                    run_name,
                )
                cached = {
                    "digest": digest,
                    "test": predict_proba(model, _images(real_test, cfg.batch_size, num_workers)),
                    "fidelity": predict_proba(model, _images(fidelity_set, cfg.batch_size, num_workers))
                    if arm == REFERENCE
                    else None,
                    "train_loss": float(trainer.callback_metrics.get("train/loss_epoch", float("nan"))),
                }
                if arm == REFERENCE:
                    trainer.save_checkpoint(ckpt)
                atomic_write(cache, lambda tmp, c=cached: torch.save(c, tmp))
            test_probs[arm].append(cached["test"])
            if arm == REFERENCE:
                fid_probs.append(cached["fidelity"])
                classifiers.append(str(ckpt.relative_to(out_dir)))

    comparison = compare_arms(
        test_probs,
        test_labels,
        task,
        REFERENCE,
        int(cfg.bootstrap.num_resamples),
        int(cfg.bootstrap.seed),
        pick_device(cfg.sampling.device),
    )
    for arm in ARMS:
        comparison["arms"][arm].update(arms_info[arm])
    fidelity = class_fidelity(
        fid_probs,
        fid_labels,
        test_probs[REFERENCE],
        test_labels,
        task,
        int(cfg.bootstrap.num_resamples),
        int(cfg.bootstrap.seed),
    )
    notes = []
    small = {c: n for c, n in test_counts.items() if n < NOISY_CLASS_SIZE}
    if small:
        notes.append(
            f"noisy: the {cfg.split} split has fewer than {NOISY_CLASS_SIZE} images of {small}; "
            "read the intervals, not the means"
        )
    if not any(added.values()):
        notes.append(
            "arm (2) adds no generated images (synthetic_per_class=auto and the train classes are equally "
            "large), so it repeats arm (1); set synthetic_per_class=N to add N per class"
        )
    short = {c: len(pool[c]) for c in class_names if len(pool[c]) < needed[c]}
    if short:
        notes.append(f"fewer samples than planned: {short} of {needed}")
    results = {
        **base,
        "split": cfg.split,
        "model": str(cfg.model.net.name),
        "task": {
            "class_names": class_names,
            "melanoma_vs_rest": task.melanoma is not None,
            "metrics": list(task.metrics),
        },
        "seeds": seeds,
        "num_resamples": comparison["num_resamples"],
        "data": {"train": train_counts, "test": test_counts, "describe": dm.describe()},
        "samples": {**sample_info, "planned": {"real_plus_synthetic": added, "synthetic_only": only}},
        "arms": comparison["arms"],
        "differences": comparison["differences"],
        "fidelity": fidelity,
        "classifiers": classifiers,
        "notes": notes,
        "seconds": time.perf_counter() - start,
    }
    results["metrics"] = flat_metrics(results)
    atomic_write_json(out_dir / "metrics.json", results)
    table = "\n".join(utility_markdown(results)) + "\n"
    atomic_write_text(out_dir / "table.md", table)
    plot_utility([("this run", results)], out_dir / UTILITY_PLOT)
    print("\n## Downstream utility: do the generated lesions help?\n\n" + table)
    print(f"utility: {out_dir / 'metrics.json'} ({results['seconds']:.0f} s)")
    log_results(cfg, results, out_dir)
    return results
