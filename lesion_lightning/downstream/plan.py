"""How many generated samples each arm gets per class."""

from __future__ import annotations

from collections import Counter

ARMS = ("real", "real_plus_synthetic", "synthetic_only")
REFERENCE = "real"


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
