"""Do the generated lesions help? Classifiers trained on real, real + generated and generated-only
lesions, all tested on the same real test images (`python -m lesion_lightning.utility`).

Arms, each trained for the same number of steps, for every seed:

1. ``real``: the real train split of the VQ-VAE's data (same split, normalisation, augmentation);
2. ``real_plus_synthetic``: the same plus class-conditional samples, by default topping every class
   up to the largest one (``synthetic_per_class=auto``) or N per class;
3. ``synthetic_only``: samples only, as many per class as the real train split has
   (``synthetic_only_per_class=match``) or N per class: "classification accuracy score", train on
   generated, test on real (Ravuri & Vinyals 2019).

Samples come from ``samples_dir`` (labels read from its samples.json) and, where it holds too few of a
class, from the prior through ``lesion_lightning.sample`` (the cached sampler) into
``<out>/generated/<class>/``. The arm-(1) classifiers are saved as ``<out>/classifiers/real_seed<k>.ckpt``
(load with :func:`lesion_lightning.modules.classifier_module.load_classifier`) and also score every
generated sample: class fidelity. Every finished (arm, seed) run is cached in ``<out>/runs/`` so an
interrupted stage resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from lesion_lightning.data.generated import GeneratedImages, LabelledSamples, read_labelled_samples
from lesion_lightning.data.transforms import ImageTransform, build_augment
from lesion_lightning.metrics.utility import NOISY_CLASS_SIZE, Task, class_fidelity, compare_arms
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.modules.classifier_module import ClassifierModule, predict_proba
from lesion_lightning.report_utility import PLOT, plot_utility, utility_markdown
from lesion_lightning.utils.config import plain_settings
from lesion_lightning.utils.instantiate import instantiate_loggers
from lesion_lightning.utils.io import atomic_write_json, atomic_write_text
from lesion_lightning.utils.runtime import pick_device
from lesion_lightning.utils.wandb_utils import finish_wandb

log = logging.getLogger(__name__)

ARMS = ("real", "real_plus_synthetic", "synthetic_only")
REFERENCE = "real"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# ------------------------------------------------------------------------------------------ plan
def synthetic_plan(
    train_counts: dict[str, int], per_class: str | int, only_per_class: str | int
) -> tuple[dict[str, int], dict[str, int]]:
    """Samples per class for arm (2) (added to the real images) and arm (3) (on their own)."""
    largest = max(train_counts.values())
    if per_class == "auto":
        added = {c: largest - n for c, n in train_counts.items()}
    elif isinstance(per_class, int) and per_class >= 0:
        added = dict.fromkeys(train_counts, per_class)
    else:
        raise ValueError(f"synthetic_per_class must be `auto` or an integer >= 0, got {per_class!r}")
    if only_per_class == "match":
        only = dict(train_counts)
    elif isinstance(only_per_class, int) and only_per_class > 0:
        only = dict.fromkeys(train_counts, only_per_class)
    else:
        raise ValueError(
            f"synthetic_only_per_class must be `match` or an integer > 0, got {only_per_class!r}"
        )
    return added, only


def _class_counts(labels, class_names: list[str]) -> dict[str, int]:
    counts = Counter(int(x) for x in labels)
    return {name: counts.get(i, 0) for i, name in enumerate(class_names)}


# ------------------------------------------------------------------------------------------ samples
def _sample_config(cfg: DictConfig, label: str, num_samples: int, seed: int, out_dir: Path) -> DictConfig:
    """conf/sample.yaml with this stage's sampling settings, as `python -m lesion_lightning.sample` would."""
    base = OmegaConf.load(CONF_DIR / "sample.yaml")
    base.pop("defaults", None)
    return OmegaConf.merge(
        base,
        OmegaConf.to_container(cfg.sampling, resolve=True),
        {
            "pixelcnn_ckpt": str(cfg.pixelcnn_ckpt),
            "vqvae_ckpt": str(cfg.vqvae_ckpt),
            "num_samples": int(num_samples),
            "label": label,
            "seed": int(seed),
            "out_dir": str(out_dir),
            "overwrite": True,
        },
    )


def gather_samples(
    cfg: DictConfig, class_names: list[str], needed: dict[str, int], out_dir: Path, vqvae_fingerprint: str
) -> tuple[dict[str, list[Path]], dict]:
    """``needed[c]`` labelled sample files per class: samples_dir's first, the shortfall generated."""
    pool: dict[str, list[Path]] = {c: [] for c in class_names}
    info: dict = {"samples_dir": None, "from_samples_dir": {}, "generated": {}}
    if cfg.samples_dir:
        given = read_labelled_samples(cfg.samples_dir)
        recorded = given.meta.get("vqvae_fingerprint")
        if recorded and recorded != vqvae_fingerprint:
            raise ValueError(
                f"samples_dir={cfg.samples_dir} was decoded by another VQ-VAE than vqvae_ckpt={cfg.vqvae_ckpt} "
                "(see its samples.json); pass the matching pair"
            )
        unknown = sorted(set(given.labels) - set(class_names))
        if unknown:
            raise ValueError(f"samples_dir={cfg.samples_dir} holds classes {unknown} the data does not have")
        for c in class_names:
            pool[c] = given.of_class(c)[: needed[c]]
        info["samples_dir"] = str(Path(cfg.samples_dir).resolve())
        info["from_samples_dir"] = {c: len(pool[c]) for c in class_names}
    for i, c in enumerate(class_names):
        short = needed[c] - len(pool[c])
        if short <= 0:
            continue
        target = out_dir / "generated" / c
        # a seed per class, away from the sample stage's (seed 0, mixed classes)
        seed = int(cfg.sampling.seed) + 1000 * (i + 1)
        reused = _reusable(target, c, short, seed, cfg)
        if reused is None:
            from lesion_lightning.sample import sample

            log.info("generating %d %s samples into %s", short, c, target)
            sample(_sample_config(cfg, c, short, seed, target))
            reused = read_labelled_samples(target)
        pool[c] += reused.of_class(c)[:short]
        info["generated"][c] = short
    return pool, info


def _reusable(target: Path, label: str, count: int, seed: int, cfg: DictConfig) -> LabelledSamples | None:
    """A previous attempt's generated folder, if this prior made it with this seed and temperature
    (the image of sample n depends on nothing else: not the batch size, device or sampler)."""
    if not (target / "samples.json").is_file():
        return None
    found = read_labelled_samples(target)
    settings = found.meta.get("settings") or {}
    same = (
        found.meta.get("pixelcnn_ckpt") == str(Path(cfg.pixelcnn_ckpt).resolve())
        and settings.get("seed") == seed
        and settings.get("temperature") == cfg.sampling.temperature
        and len(found.of_class(label)) >= count
    )
    return found if same else None


# ------------------------------------------------------------------------------------------ training
def train_classifier(
    dataset: Dataset,
    model_cfg: DictConfig | dict,
    class_names: list[str],
    normalization: str,
    image_size: int,
    steps: int,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    trainer_cfg: dict | None = None,
    log_dir: Path | None = None,
    name: str = "classifier",
    sampler: Sampler | None = None,
) -> tuple[ClassifierModule, L.Trainer]:
    """A ClassifierModule trained for exactly ``steps`` optimizer steps on ``dataset`` (reshuffled per
    epoch, or drawn by ``sampler``: the balanced arm's data.budget.balanced_sampler)."""
    if len(dataset) == 0:
        raise ValueError(f"{name}: no training images")
    L.seed_everything(seed, workers=True)
    model = hydra.utils.instantiate(
        model_cfg, class_names=list(class_names), normalization=normalization, image_size=int(image_size)
    )
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > batch_size,  # a trailing batch of one breaks BatchNorm
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    trainer = L.Trainer(
        max_steps=int(steps),
        logger=CSVLogger(str(log_dir), name=name, version="") if log_dir else False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, int(steps) // 10)),
        **(trainer_cfg or {}),
    )
    trainer.fit(model, train_dataloaders=loader)
    return model.eval(), trainer


def _images(dataset: Dataset, batch_size: int, num_workers: int):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return (batch["image"] for batch in loader)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ the stage
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
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f".{cache.name}.tmp")
                torch.save(cached, tmp)
                tmp.replace(cache)
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
    plot_utility([("this run", results)], out_dir / PLOT)
    print("\n## Downstream utility: do the generated lesions help?\n\n" + table)
    print(f"utility: {out_dir / 'metrics.json'} ({results['seconds']:.0f} s)")
    log_results(cfg, results, out_dir)
    return results


def flat_metrics(results: dict) -> dict[str, float]:
    """``utility/<arm>/<metric>`` seed-means, ``utility/diff_<arm>/<metric>``, ``utility/fidelity/<class>``."""
    flat = {}
    for arm, entry in results["arms"].items():
        for m, v in entry["mean"].items():
            if v is not None:
                flat[f"utility/{arm}/{m}"] = float(v)
    for name, diff in results["differences"].items():
        arm = name.split(" - ")[0]
        for m, d in diff.items():
            if d["mean"] is not None:
                flat[f"utility/diff_{arm}/{m}"] = float(d["mean"])
    for c, e in results["fidelity"].items():
        if e.get("generated_accuracy") is not None:
            flat[f"utility/fidelity/{c}"] = float(e["generated_accuracy"])
    return flat


def log_results(cfg: DictConfig, results: dict, out_dir: Path) -> None:
    """The flat metrics, the table and the bar plot to the `logger` group's loggers (W&B: job_type=utility)."""
    from lesion_lightning.report_utility import fidelity_rows, utility_rows

    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:
        return
    try:
        for logger in loggers:
            logger.log_hyperparams(results["settings"])
            logger.log_metrics(results["metrics"], step=0)
            if isinstance(logger, WandbLogger):
                header, rows = utility_rows(results)
                logger.log_table("utility/table", columns=header, data=rows)
                header, rows = fidelity_rows(results)
                logger.log_table("utility/fidelity", columns=header, data=rows)
                if (out_dir / PLOT).is_file():
                    logger.log_image("utility/bars", [str(out_dir / PLOT)])
            logger.save()
            logger.finalize("success")
    finally:
        finish_wandb()
