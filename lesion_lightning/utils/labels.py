"""Which class each conditional sample is drawn for (`sample.label_distribution`).

`train` (default): the train split's class frequencies, so the generated set has the class mix the
model learned from and FID against real images does not partly measure a label mismatch;
`uniform`: every class equally often; a class name: all samples of that class.
Counts are allocated exactly (largest remainder of n * p), then put in a seeded random order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DISTRIBUTIONS = ("train", "uniform")


@dataclass(frozen=True)
class Classes:
    """A model's classes in index order: a class given by name or by index -> its index, and the check
    that a prior's classes are the data's (the one place both are spelled)."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, names: Sequence[str]) -> Classes:
        return cls(tuple(str(n) for n in names))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, label: str | int, key: str = "label") -> int:
        """`label` (a class name, or an index in range) -> its index; ValueError naming `key` otherwise."""
        if isinstance(label, str) and label in self.names:
            return self.names.index(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(self.names):
            return label
        raise ValueError(f"{key}={label!r} is not one of this prior's classes {list(self.names)}")

    def require_same(
        self, data: Sequence[str], what: str = "pass checkpoints from the same pipeline run"
    ) -> None:
        """Refuse data whose classes differ from these (the prior's): indices would mean other classes."""
        if list(self.names) != list(data):
            raise ValueError(
                f"the PixelCNN was trained on classes {list(self.names)}, the VQ-VAE's data has {list(data)}: {what}"
            )


def allocate(probs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n,) class indices with counts as close to n * probs as integers allow, in a seeded order."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0 or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f"class probabilities must be non-negative and not all zero, got {probs}")
    exact = probs / probs.sum() * n
    counts = np.floor(exact).astype(np.int64)
    remainder = n - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    labels = np.repeat(np.arange(probs.size), counts)
    return np.random.default_rng(seed).permutation(labels)


def train_frequencies(index_dir: str | Path | None, num_classes: int) -> np.ndarray:
    """Class frequencies of the index dataset's train split (train_labels.npy)."""
    path = Path(index_dir) / "train_labels.npy" if index_dir else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"label_distribution=train needs the train split's labels, but {path or 'no index dataset'} "
            "is recorded in the PixelCNN checkpoint (index_dataset) or found; pass "
            "label_distribution=uniform or a class name, or keep the index dataset in place"
        )
    labels = np.load(path)
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise ValueError(f"{path} holds no labels: the train split is empty")
    return counts / counts.sum()


def sample_labels(
    distribution: str | int,
    class_names: list[str],
    num_classes: int,
    n: int,
    seed: int,
    index_dir: str | Path | None = None,
) -> tuple[np.ndarray, dict]:
    """(n,) class indices and a record of how they were chosen (for samples.json)."""
    if distribution == "train":
        probs = train_frequencies(index_dir, num_classes)
    elif distribution == "uniform":
        probs = np.full(num_classes, 1.0 / num_classes)
    else:
        names = list(class_names) if len(class_names) == num_classes else [str(c) for c in range(num_classes)]
        try:
            idx = Classes.of(names).index(distribution, "label_distribution")
        except ValueError:
            raise ValueError(
                f"label_distribution={distribution!r}: use one of {list(DISTRIBUTIONS)} or a class of this "
                f"prior {class_names}"
            ) from None
        probs = np.eye(num_classes)[idx]
    names = class_names if len(class_names) == num_classes else [str(c) for c in range(num_classes)]
    record = {
        "label_distribution": distribution,
        "class_probabilities": {names[c]: float(p) for c, p in enumerate(probs)},
    }
    return allocate(probs, n, seed), record
