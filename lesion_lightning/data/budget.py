"""Real-data budgets for the utility stage's curve: nested stratified subsets of a train split, and
class-balanced sampling weights for the balanced real control (arm 1b).

* :func:`nested_subsets`: one seeded permutation per class; the subset at fraction f keeps the first
  ``round(f * n_c)`` images of class c's permutation (at least one). So every class keeps its share
  (stratified), a smaller fraction's subset lies inside every larger one's (nested: the curve differs
  from point to point only by the images added), and one call serves every arm (the same subset).
* :func:`balanced_sampler`: per-sample weights ``1 / n_class`` so each class is drawn equally often,
  with replacement, ``len(labels)`` draws per epoch: the same number of optimizer steps as plain
  shuffling, only the class prior changes. This is the control that separates "the generated images
  help" from "a balanced training prior helps" (topping classes up with samples does both at once).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """Sorted distinct fractions in (0, 1]; a clear error otherwise (the key is utility.real_fractions)."""
    try:
        values = sorted({float(f) for f in fractions})
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"utility.real_fractions must be a list of numbers in (0, 1], got {fractions!r}"
        ) from err
    if not values or values[0] <= 0 or values[-1] > 1:
        raise ValueError(
            f"utility.real_fractions must be a non-empty list of numbers in (0, 1], got {fractions!r}"
        )
    return values


def subset_size(class_size: int, fraction: float) -> int:
    """Images of a class of ``class_size`` kept at ``fraction``: round(f * n), at least one."""
    return max(1, round(fraction * class_size))


def nested_subsets(
    labels: Sequence[int], fractions: Sequence[float], seed: int = 0
) -> dict[float, np.ndarray]:
    """Indices (sorted) of the stratified subset at each fraction; nested, seeded, at least one per class."""
    labels = np.asarray(labels, dtype=np.int64)
    values = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    order = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    out = {}
    for f in values:
        keep = [members[: subset_size(len(members), f)] for members in order.values()]
        out[f] = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return out


def balanced_weights(labels: Sequence[int]) -> torch.Tensor:
    """Per-sample weight 1 / (size of its class): every class carries the same total weight."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if labels.numel() == 0:
        raise ValueError("balanced sampling needs at least one labelled image")
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


def balanced_sampler(labels: Sequence[int], seed: int) -> WeightedRandomSampler:
    """A sampler drawing ``len(labels)`` indices per epoch, each class equally often in expectation."""
    generator = torch.Generator().manual_seed(int(seed))
    weights = balanced_weights(labels)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)
