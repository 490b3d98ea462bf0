"""How many generated samples each arm gets per class, at every real fraction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from lesion_lightning.data.budget import subset_size


def added_per_class(
    full: Mapping[str, int], subset: Mapping[str, int], per_class: str | int
) -> dict[str, int]:
    """Generated images arm (2) adds to the real subset, per class."""
    if per_class == "auto":
        largest = max(full.values())
        return {c: largest - subset[c] for c in full}
    if per_class == "full":
        return {c: full[c] - subset[c] for c in full}
    if isinstance(per_class, int) and not isinstance(per_class, bool) and per_class >= 0:
        return dict.fromkeys(full, per_class)
    raise ValueError(f"synthetic_per_class must be auto, full or an integer >= 0, got {per_class!r}")


def only_per_class(full: Mapping[str, int], per_class: str | int) -> dict[str, int]:
    """Generated images arm (3) trains on, per class."""
    if per_class == "match":
        return dict(full)
    if isinstance(per_class, int) and not isinstance(per_class, bool) and per_class > 0:
        return dict.fromkeys(full, per_class)
    raise ValueError(f"synthetic_only_per_class must be match or an integer > 0, got {per_class!r}")


def class_counts(labels, class_names: list[str]) -> dict[str, int]:
    counts = Counter(int(x) for x in labels)
    return {name: counts.get(i, 0) for i, name in enumerate(class_names)}


def samples_needed(train_counts: dict[str, int], settings) -> tuple[dict[str, int], dict]:
    """Generated images one seed needs per class: the most that any fraction's arm (2) or arm (3)
    takes (``settings``: a downstream.curve.BudgetSettings); and the plan per fraction."""
    added = {}
    for f in settings.fractions:
        subset = {c: subset_size(n, f) for c, n in train_counts.items()}
        added[f] = added_per_class(train_counts, subset, settings.synthetic_per_class)
    only = only_per_class(train_counts, settings.synthetic_only_per_class)
    needed = {c: max(max(a[c] for a in added.values()), only[c]) for c in train_counts}
    return needed, {"real_plus_synthetic": {f"{f:g}": a for f, a in added.items()}, "synthetic_only": only}
