"""Intervals over training seeds and test images, and "equivalent real images", for the utility
stage's data-budget curve.

**Intervals: a hierarchical bootstrap, paired.** One replicate draws (a) the seeds, ``S`` of the
``S`` trained seeds with replacement, then (b) the real test images, stratified (every class keeps
its size, so every AUC stays defined). A curve point's replicate is its metric computed per drawn
seed on the drawn images, averaged over the drawn seeds. Every curve point (arm x real fraction) uses
the SAME seed draw and image draw, so differences between arms and the curve's inversion are taken
replicate by replicate (paired): noise shared by two points (a hard test image, an unlucky seed
that every arm shares through its initialisation) cancels in their difference. The interval covers
training noise (seeds) and test-set noise; it does not cover the choice of the real subset (one
subset per fraction, shared by all arms, so the comparison at a fraction is not confounded by it).
With few seeds the seed level is coarse: a bootstrap of 3 seeds knows only 10 seed multisets and
understates the seed spread by a factor sqrt((S-1)/S); ``tests/test_utility_budget.py`` measures the
coverage this gives on a simulation with a known mean.

**Equivalent real images.** For arm (2) at fraction f (``n_f`` real images plus ``added`` generated
ones) and a reference curve (arm 1b: balanced real-only, its score at each real budget ``n``): the
``n`` at which the curve reaches arm (2)'s score, the curve interpolated linearly in ``log n``
between the measured budgets after making it non-decreasing (pool-adjacent-violators: noise can make
a measured curve dip, and a dipping curve has several inverses). Above the curve's top score (the
full split) the answer is "beyond the curve" (+inf: more than every real image we have); below its
first point "below the curve" (-inf: less than the smallest budget measured). "Worth" is the
equivalent minus the real images arm (2) already had, ``n_eq - n_f``; its share of ``added`` says
how many real images one generated image replaces. Each bootstrap replicate inverts its own curve
at its own arm-(2) score (paired), and ``Interval.censored`` (metrics/stats.py) gives
the interval (an end may be infinite).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lesion_lightning.metrics.stats import Interval
from lesion_lightning.metrics.utility import BOOT_CHUNK, Task, batched_scores, score

BELOW, ON, BEYOND = "below the curve", "on the curve", "beyond the curve"


@dataclass(frozen=True)
class Replicates:
    """Seed-mean point estimates and paired hierarchical-bootstrap replicates of every curve point.

    ``point[key][metric]`` (None where undefined) and ``boot[key][metric]`` ``(num_resamples,)``
    (NaN where undefined); keys are the caller's curve points, e.g. ``"real_balanced@0.25"``.
    """

    point: dict[str, dict[str, float | None]]
    per_seed: dict[str, list[dict[str, float | None]]]
    boot: dict[str, dict[str, np.ndarray]]
    num_resamples: int
    num_seeds: int
    resample_seeds: bool

    def interval(self, key: str, metric: str) -> list[float] | None:
        reps = self.boot[key][metric]
        if reps.size == 0 or not np.isfinite(reps).any():
            return None
        return Interval.percentile(reps).to_json()

    def difference(self, key: str, reference: str, metric: str) -> tuple[float | None, list[float] | None]:
        """``key - reference``: the difference of seed-means and its paired interval."""
        x, r = self.point[key][metric], self.point[reference][metric]
        mean = None if x is None or r is None else x - r
        reps = self.boot[key][metric] - self.boot[reference][metric]
        ci = Interval.percentile(reps).to_json() if reps.size and np.isfinite(reps).any() else None
        return mean, ci

    def sd(self, key: str, metric: str) -> float | None:
        vals = [s[metric] for s in self.per_seed[key] if s[metric] is not None]
        if not vals:
            return None
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _stratified(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, N)`` resamples: within each class, as many images as it has, with replacement."""
    out = np.empty((count, len(labels)), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out[:, start : start + len(members)] = rng.choice(members, size=(count, len(members)), replace=True)
        start += len(members)
    return out


def hierarchical_bootstrap(
    probs: Mapping[str, Sequence[Tensor]],
    labels: Tensor,
    task: Task,
    num_resamples: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resample_seeds: bool = True,
) -> Replicates:
    """``probs[key]``: one ``(N, C)`` tensor per training seed (the same seeds, in the same order, for
    every key; rows aligned with ``labels``). ``resample_seeds=False`` resamples test images only."""
    keys = list(probs)
    seeds = {len(probs[k]) for k in keys}
    if len(seeds) != 1 or 0 in seeds:
        raise ValueError(f"every curve point needs the same number (>= 1) of seeds, got {sorted(seeds)}")
    num_seeds = seeds.pop()
    metrics = task.metrics
    per_seed = {k: [score(p, labels, task) for p in probs[k]] for k in keys}
    point: dict[str, dict[str, float | None]] = {}
    for k in keys:
        point[k] = {}
        for m in metrics:
            vals = [s[m] for s in per_seed[k]]
            point[k][m] = None if any(v is None for v in vals) else float(np.mean(vals))
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    boot = {k: {m: np.full(num_resamples, np.nan) for m in metrics} for k in keys}
    dev_labels = labels.to(device)
    dev_probs = {k: [p.to(device) for p in probs[k]] for k in keys}
    for lo in range(0, num_resamples, BOOT_CHUNK):
        count = min(BOOT_CHUNK, num_resamples - lo)
        idx = torch.from_numpy(_stratified(y, count, rng)).to(device)
        if resample_seeds:
            draw = rng.integers(0, num_seeds, size=(count, num_seeds))
        else:
            draw = np.tile(np.arange(num_seeds), (count, 1))
        # (B, S) one-hot counts of each seed in each replicate's draw
        weight = torch.from_numpy(np.stack([np.bincount(d, minlength=num_seeds) for d in draw])).double()
        for k in keys:
            scored = [batched_scores(p, dev_labels, idx, task) for p in dev_probs[k]]
            for m in metrics:
                per = torch.stack([s[m] for s in scored], 1).cpu()  # (B, S)
                boot[k][m][lo : lo + count] = ((per * weight).sum(1) / num_seeds).numpy()
    return Replicates(point, per_seed, boot, int(num_resamples), num_seeds, bool(resample_seeds))


# ------------------------------------------------------------------------------------ equivalent real
def monotone(values: Sequence[float]) -> np.ndarray:
    """The closest non-decreasing sequence in least squares (pool-adjacent-violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, size]
    for v in np.asarray(values, dtype=np.float64):
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, s2), (m1, s1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * s1 + m2 * s2) / (s1 + s2), s1 + s2])
    return np.concatenate([np.full(int(s), m) for m, s in blocks])


def invert_curve(n_real: Sequence[float], curve: Sequence[float], target: float) -> tuple[float, str]:
    """The real budget ``n`` at which the curve (scores at ascending budgets ``n_real``, made
    non-decreasing, linear in log n between them) first reaches ``target``: (n, status); -inf /
    +inf below the first point / beyond the last."""
    n = np.asarray(n_real, dtype=np.float64)
    if n.ndim != 1 or len(n) < 1 or np.any(n <= 0) or np.any(np.diff(n) <= 0):
        raise ValueError(f"the curve's budgets must be ascending positive numbers, got {list(n_real)}")
    y = monotone(curve)
    if not (np.isfinite(y).all() and math.isfinite(target)):
        return float("nan"), ON
    if target > y[-1]:
        return float("inf"), BEYOND
    if target < y[0]:
        return float("-inf"), BELOW
    i = int(np.argmax(y >= target))  # first budget whose score reaches the target
    if i == 0:
        return float(n[0]), ON
    t = (target - y[i - 1]) / (y[i] - y[i - 1])  # y[i-1] < target <= y[i]
    return float(math.exp(math.log(n[i - 1]) + t * (math.log(n[i]) - math.log(n[i - 1])))), ON


def _json_number(x: float) -> float | str | None:
    """JSON has no infinities: -inf / +inf are written as "below the curve" / "beyond the curve"
    (less than the smallest budget measured / more than the full split), NaN (undefined) as null."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return BEYOND if x > 0 else BELOW
    return float(x)


def equivalent_real(
    n_real: Sequence[int],
    curve_point: Sequence[float],
    curve_boot: np.ndarray,
    target_point: float,
    target_boot: np.ndarray,
    n_own: int,
    added: int,
) -> dict:
    """Equivalent real images of one arm-(2) point, with its bootstrap interval.

    ``curve_boot`` ``(B, F)``: the reference curve's replicates at the ``F`` budgets; ``target_boot``
    ``(B,)``: arm (2)'s replicates on the same draws. ``n_own``: the real images arm (2) trained on;
    ``added``: its generated images. Infinite values are stored as the strings ``BELOW`` / ``BEYOND``.
    """
    value, status = invert_curve(n_real, curve_point, target_point)
    reps = np.array(
        [
            invert_curve(n_real, curve_boot[b], float(target_boot[b]))[0]
            if np.isfinite(curve_boot[b]).all() and np.isfinite(target_boot[b])
            else np.nan
            for b in range(len(target_boot))
        ]
    )
    ci = Interval.censored(reps)
    lo, hi = ci.low, ci.high
    worth = value - n_own
    out = {
        "n_real": int(n_own),
        "added": int(added),
        "status": status,
        "plateau": on_plateau(curve_point, curve_boot, target_point, target_boot),
        "equivalent_real": _json_number(value),
        "equivalent_real_ci": [_json_number(lo), _json_number(hi)],
        "worth": _json_number(worth),
        "worth_ci": [_json_number(lo - n_own), _json_number(hi - n_own)],
        "worth_share": _json_number(worth / added) if added else None,
        "share_beyond": float(np.mean(reps == np.inf)) if reps.size else None,
        "curve_budgets": [int(x) for x in n_real],
    }
    return out


def on_plateau(
    curve_point: Sequence[float], curve_boot: np.ndarray, target_point: float, target_boot: np.ndarray
) -> bool:
    """Whether the reference curve has stopped rising (its top is reached before the last budget) and the
    target is not distinguishable from that top (the paired interval of target - top budget, over the
    same bootstrap draws, holds 0). There the inversion is not identifiable: a target a hair under a
    saturated curve (AUROC 0.996 against 1.000) would read as "worth minus most of the real images"."""
    y = monotone(curve_point)
    if not (np.isfinite(y).all() and math.isfinite(target_point)):
        return False
    if int(np.argmax(y >= y[-1])) == len(y) - 1:  # still rising at the last budget
        return False
    diff = np.asarray(target_boot, dtype=np.float64) - np.asarray(curve_boot, dtype=np.float64)[:, -1]
    diff = diff[np.isfinite(diff)]
    if not diff.size:
        return False
    ci = Interval.percentile(diff)
    return bool(ci.low <= 0.0 <= ci.high)


def as_number(x: float | str | None) -> float:
    """A stored equivalent-real value back as a number: BELOW / BEYOND -> -inf / +inf, null -> NaN."""
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return {BELOW: float("-inf"), BEYOND: float("inf")}[x]
    return float(x)


def covers(ci: Sequence[float | str | None] | None, value: float) -> bool:
    """Whether an interval (ends may be BELOW / BEYOND, i.e. infinite) contains ``value``."""
    if ci is None:
        return False
    lo, hi = (as_number(x) for x in ci)
    return bool(lo <= value <= hi)
