"""The utility stage's data-budget curve: every arm at every real fraction, for every seed, scored on
every test set, then summarised with paired hierarchical-bootstrap intervals and equivalent real images.

Arms at a real fraction f (the nested stratified subset of the real train split, the same for every
arm: :func:`lesion_lightning.data.budget.nested_subsets`):

* ``real`` (1): the subset, plain shuffling (the class prior of the data);
* ``real_balanced`` (1b): the subset, class-balanced sampling (each class drawn equally often, same
  number of steps): the control for the rebalancing that topping classes up with samples does;
* ``real_plus_synthetic`` (2): the subset plus generated images per class: ``auto`` tops every class up to
  the full split's largest class, ``full`` back to the full split's own class counts, or N per class;
* ``synthetic_only`` (3): generated images only (one point, not per fraction).

Nothing here knows about checkpoints or the prior: the caller passes the datasets and a ``fit`` /
``predict`` pair, so the tests run the same machinery with "generators" that are real held-out images,
label-shuffled renders or duplicates of real images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Sampler

from lesion_lightning.data.budget import balanced_sampler, check_fractions, nested_subsets
from lesion_lightning.downstream.plan import added_per_class, only_per_class
from lesion_lightning.metrics.budget import Replicates, equivalent_real, hierarchical_bootstrap
from lesion_lightning.metrics.utility import Task

log = logging.getLogger(__name__)

REAL, BALANCED, PLUS, ONLY = "real", "real_balanced", "real_plus_synthetic", "synthetic_only"
ARMS = (REAL, BALANCED, PLUS, ONLY)
CURVE_ARMS = (REAL, BALANCED, PLUS)
# the curve "equivalent real images" are read on: real-only with a balanced prior, so that the
# rebalancing arm (2) gets for free is not counted as the samples' worth
REFERENCE_CURVE = BALANCED
PAIRS = ((PLUS, REAL), (PLUS, BALANCED), (BALANCED, REAL))


def point_key(arm: str, fraction: float | None) -> str:
    return arm if fraction is None else f"{arm}@{fraction:g}"


@dataclass(frozen=True)
class BudgetSettings:
    """What the curve trains: fractions, seeds and how much generated data each arm gets."""

    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    subset_seed: int = 0
    synthetic_per_class: str | int = "auto"
    synthetic_only_per_class: str | int = "match"
    resample_synthetic_per_seed: bool = False
    num_resamples: int = 1000
    bootstrap_seed: int = 0
    arms: tuple[str, ...] = ARMS

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(check_fractions(self.fractions)))
        unknown = set(self.arms) - set(ARMS)
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")


class Labelled(Dataset):
    """A dataset view with a ``labels`` array (Subset has none) and an identity for run caches."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.labels = np.asarray(dataset.labels, dtype=np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def identity(self) -> list[str]:
        names = getattr(self.dataset, "ids", None) or [str(f) for f in getattr(self.dataset, "files", [])]
        return [names[i] for i in self.indices] if names else [f"#{i}" for i in self.indices]


def first_of_class(pool: Dataset, counts: Mapping[int, int]) -> Labelled:
    """The first ``counts[c]`` images of each class c of ``pool`` (pool order), fewer where it has fewer."""
    labels = np.asarray(pool.labels, dtype=np.int64)
    picked = [np.flatnonzero(labels == c)[:n] for c, n in counts.items() if n > 0]
    return Labelled(pool, np.concatenate(picked) if picked else [])


def _counts(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    found = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {c: int(found[i]) for i, c in enumerate(class_names)}


@dataclass
class TrainPlan:
    """One (arm, fraction) point: its real part, its generated part per seed, balanced or not."""

    arm: str
    fraction: float | None
    real: Labelled | None
    synthetic: list[Labelled | None]  # one per seed
    balanced: bool

    @property
    def key(self) -> str:
        return point_key(self.arm, self.fraction)

    def dataset(self, k: int) -> tuple[Dataset, np.ndarray]:
        parts = [p for p in (self.real, self.synthetic[k]) if p is not None and len(p) > 0]
        if not parts:
            raise ValueError(f"{self.key}: no training images")
        labels = np.concatenate([p.labels for p in parts])
        return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), labels

    def sizes(self, k: int = 0) -> dict[str, Any]:
        synth = self.synthetic[k]
        return {
            "real": len(self.real) if self.real is not None else 0,
            "synthetic": len(synth) if synth is not None else 0,
        }


def plan_points(
    real_train: Dataset,
    pools: Sequence[Dataset] | None,
    class_names: Sequence[str],
    settings: BudgetSettings,
) -> tuple[list[TrainPlan], dict]:
    """Every (arm, fraction) to train. ``pools``: labelled generated images, one per seed (or one
    shared by every seed); None = no generator (arms 2 and 3 left out)."""
    labels = np.asarray(real_train.labels, dtype=np.int64)
    full = _counts(labels, class_names)
    if min(full.values()) == 0:
        raise ValueError(f"the train split lacks a class ({full}); the classifiers cannot learn it")
    subsets = nested_subsets(labels, settings.fractions, settings.subset_seed)
    n_seeds = len(settings.seeds)
    if pools is not None and len(pools) not in (1, n_seeds):
        raise ValueError(f"{len(pools)} synthetic pools for {n_seeds} seeds: pass one, or one per seed")
    per_seed_pool = [pools[k % len(pools)] for k in range(n_seeds)] if pools else None
    index = {c: i for i, c in enumerate(class_names)}
    plans: list[TrainPlan] = []
    info: dict = {"full": full, "fractions": {}}
    for f, idx in subsets.items():
        real = Labelled(real_train, idx)
        subset = _counts(real.labels, class_names)
        added = added_per_class(full, subset, settings.synthetic_per_class)
        info["fractions"][f] = {"real": subset, "added": added}
        for arm in (REAL, BALANCED):
            if arm in settings.arms:
                plans.append(TrainPlan(arm, f, real, [None] * n_seeds, balanced=arm == BALANCED))
        if PLUS in settings.arms and per_seed_pool:
            synth = [first_of_class(p, {index[c]: n for c, n in added.items()}) for p in per_seed_pool]
            plans.append(TrainPlan(PLUS, f, real, synth, balanced=False))
    if ONLY in settings.arms and per_seed_pool:
        only = only_per_class(full, settings.synthetic_only_per_class)
        info["synthetic_only"] = only
        synth = [first_of_class(p, {index[c]: n for c, n in only.items()}) for p in per_seed_pool]
        plans.append(TrainPlan(ONLY, None, None, synth, balanced=False))
    return plans, info


# ------------------------------------------------------------------------------------------ training
FitFn = Callable[[Dataset, Sampler | None, int, str], Any]
PredictFn = Callable[[Any, Dataset], Tensor]
HookFn = Callable[[TrainPlan, int, Any], dict]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_points(
    plans: Sequence[TrainPlan],
    tests: Mapping[str, Dataset],
    settings: BudgetSettings,
    fit: FitFn,
    predict: PredictFn,
    cache_dir: Path | None = None,
    digest_base: Mapping | None = None,
    hook: HookFn | None = None,
) -> tuple[dict[str, dict[str, list[Tensor]]], dict[str, list[dict]]]:
    """Train every plan for every seed; ``probs[test][key]`` = one ``(N, C)`` tensor per seed.

    ``fit(dataset, sampler, seed, name)``: a trained model (``sampler``: the balanced arm's
    class-balanced sampler, else None: plain shuffling). ``hook(plan, seed_index, model)``: extra primitives kept with
    the run (e.g. class fidelity). With ``cache_dir`` a finished run is stored there and reused
    while its digest (``digest_base`` + the run's images, seed and sampling) is unchanged.
    """
    probs: dict[str, dict[str, list[Tensor]]] = {t: {p.key: [] for p in plans} for t in tests}
    extras: dict[str, list[dict]] = {p.key: [] for p in plans}
    for plan in plans:
        for k, seed in enumerate(settings.seeds):
            dataset, labels = plan.dataset(k)
            name = f"{plan.key}_seed{seed}".replace("@", "_f")
            synth = plan.synthetic[k]
            digest = _digest(
                {
                    **(digest_base or {}),
                    "real": plan.real.identity() if plan.real is not None else [],
                    "synthetic": synth.identity() if synth is not None else [],
                    "balanced": plan.balanced,
                    "seed": seed,
                    "tests": {t: len(d) for t, d in tests.items()},
                }
            )
            path = cache_dir / f"{name}.pt" if cache_dir else None
            cached = torch.load(path, weights_only=True) if path is not None and path.is_file() else None
            if cached is None or cached.get("digest") != digest:
                sampler = balanced_sampler(labels, seed) if plan.balanced else None
                log.info("[%s] training on %d images", name, len(dataset))
                model = fit(dataset, sampler, seed, name)
                cached = {
                    "digest": digest,
                    "probs": {t: predict(model, d) for t, d in tests.items()},
                    "extra": hook(plan, k, model) if hook else {},
                }
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.tmp")
                    torch.save(cached, tmp)
                    tmp.replace(path)
            else:
                log.info("[%s] cached in %s, not retrained", name, path)
            for t in tests:
                probs[t][plan.key].append(cached["probs"][t])
            extras[plan.key].append(cached["extra"])
    return probs, extras


# ------------------------------------------------------------------------------------------ summary
def _entry(reps: Replicates, key: str, task: Task) -> dict:
    return {
        "mean": {m: reps.point[key][m] for m in task.metrics},
        "sd": {m: reps.sd(key, m) for m in task.metrics},
        "mean_ci": {m: reps.interval(key, m) for m in task.metrics},
        "per_seed": reps.per_seed[key],
    }


def summarise_test(
    probs: Mapping[str, Sequence[Tensor]],
    labels: Tensor,
    task: Task,
    plans: Sequence[TrainPlan],
    info: dict,
    settings: BudgetSettings,
    device: str | torch.device = "cpu",
) -> dict:
    """Points, paired differences at every fraction and equivalent real images, on one test set."""
    reps = hierarchical_bootstrap(
        probs, labels, task, settings.num_resamples, settings.bootstrap_seed, device, resample_seeds=True
    )
    fractions = list(settings.fractions)
    n_real = {f: sum(info["fractions"][f]["real"].values()) for f in fractions}
    points = {}
    for plan in plans:
        entry = _entry(reps, plan.key, task)
        entry.update(arm=plan.arm, fraction=plan.fraction, train_size=plan.sizes())
        points[plan.key] = entry
    differences = []
    for f in fractions:
        for a, b in PAIRS:
            ka, kb = point_key(a, f), point_key(b, f)
            if ka in points and kb in points:
                row: dict = {"fraction": f, "n_real": n_real[f], "arm": a, "reference": b, "metrics": {}}
                for m in task.metrics:
                    mean, ci = reps.difference(ka, kb, m)
                    row["metrics"][m] = {"mean": mean, "mean_ci": ci}
                differences.append(row)
    only = point_key(ONLY, None)
    for ref in (REAL, BALANCED):
        kr = point_key(ref, fractions[-1])
        if only in points and kr in points:
            row = {"fraction": None, "n_real": 0, "arm": ONLY, "reference": ref, "metrics": {}}
            for m in task.metrics:
                mean, ci = reps.difference(only, kr, m)
                row["metrics"][m] = {"mean": mean, "mean_ci": ci}
            differences.append(row)
    equivalent: list[dict] = []
    curve_keys = [point_key(REFERENCE_CURVE, f) for f in fractions]
    if all(k in points for k in curve_keys):
        budgets = [n_real[f] for f in fractions]
        targets = [(PLUS, f) for f in fractions] + [(ONLY, None)]
        for arm, f in targets:
            key = point_key(arm, f)
            if key not in points:
                continue
            size = points[key]["train_size"]
            row = {"arm": arm, "fraction": f, "metrics": {}}
            for m in task.metrics:
                curve = [reps.point[k][m] for k in curve_keys]
                if any(v is None for v in curve) or reps.point[key][m] is None:
                    row["metrics"][m] = None
                    continue
                row["metrics"][m] = equivalent_real(
                    budgets,
                    curve,
                    np.stack([reps.boot[k][m] for k in curve_keys], 1),
                    float(reps.point[key][m]),
                    reps.boot[key][m],
                    size["real"],
                    size["synthetic"],
                )
            equivalent.append(row)
    return {
        "n": int(len(labels)),
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(task.class_names)},
        "points": points,
        "differences": differences,
        "equivalent_real": equivalent,
        "flat_reference": flat_curve(reps, curve_keys, task) if all(k in points for k in curve_keys) else {},
    }


def flat_curve(reps: Replicates, curve_keys: Sequence[str], task: Task) -> dict[str, bool]:
    """Per metric: True when the reference curve's smallest budget already scores inside the full
    budget's interval (the data are too easy at every fraction: equivalent real images are not
    identifiable, any generator looks "worth" the smallest budget or "beyond the curve")."""
    out = {}
    for m in task.metrics:
        first, last = reps.point[curve_keys[0]][m], reps.interval(curve_keys[-1], m)
        out[m] = bool(first is not None and last is not None and first >= last[0])
    return out


def run_curve(
    real_train: Dataset,
    tests: Mapping[str, tuple[Dataset, Tensor]],
    pools: Sequence[Dataset] | None,
    class_names: Sequence[str],
    settings: BudgetSettings,
    fit: FitFn,
    predict: PredictFn,
    cache_dir: Path | None = None,
    digest_base: Mapping | None = None,
    hook: HookFn | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict, dict[str, list[dict]], dict[str, dict[str, list[Tensor]]]]:
    """Plan, train and summarise the curve. ``tests[name] = (dataset, labels)``; returns the
    ``curve`` section of metrics.json, the hooks' extras per point key and the test probabilities
    (``probs[test][key]``, one tensor per seed)."""
    plans, info = plan_points(real_train, pools, class_names, settings)
    probs, extras = train_points(
        plans, {t: d for t, (d, _) in tests.items()}, settings, fit, predict, cache_dir, digest_base, hook
    )
    task = Task(tuple(class_names))
    fractions = list(settings.fractions)
    curve = {
        "fractions": fractions,
        "n_real": [sum(info["fractions"][f]["real"].values()) for f in fractions],
        "real_per_class": [info["fractions"][f]["real"] for f in fractions],
        "added_per_class": [info["fractions"][f]["added"] for f in fractions],
        "synthetic_only_per_class": info.get("synthetic_only"),
        "full_per_class": info["full"],
        "seeds": list(settings.seeds),
        "num_resamples": settings.num_resamples,
        "interval": "hierarchical bootstrap: seeds, then stratified test images; paired across points",
        "reference_curve": REFERENCE_CURVE,
        "tests": {
            t: summarise_test(probs[t], labels, task, plans, info, settings, device)
            for t, (_, labels) in tests.items()
        },
    }
    return curve, extras, probs
