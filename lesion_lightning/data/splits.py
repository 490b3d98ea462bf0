"""Deterministic train/val/test split: stratified by diagnosis, grouped by lesion and patient.

ISIC holds several images of one lesion (HAM10000 ``lesion_id``) and several lesions of one patient
(ISIC 2020 ``patient_id``). Splitting by image would put near-copies of a test image in the training
set, so whole groups (see :func:`lesion_lightning.data.layouts.group_keys`) are assigned to one
split. Within each diagnosis (a group's majority diagnosis) groups are shuffled with the seed and
placed, largest first, into the split furthest below its target share, which keeps every class in
roughly the requested proportions. The split is written once as JSON and reused by every stage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lesion_lightning.data.layouts import Record, group_keys
from lesion_lightning.data.stale import tmp_tag
from lesion_lightning.data.vocabulary import VOCABULARY

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_VERSION = 1


def split_digest(records: Sequence[Record], val_fraction: float, test_fraction: float, seed: int) -> str:
    """Content key of a split: the ids, diagnoses and groups of the records, and the split settings."""
    h = hashlib.sha256()
    h.update(json.dumps([SPLIT_VERSION, float(val_fraction), float(test_fraction), int(seed)]).encode())
    for rec in sorted(records, key=lambda r: r.id):
        h.update(f"{rec.id}\t{rec.diagnosis}\t{rec.lesion_id}\t{rec.patient_id}\n".encode())
    return h.hexdigest()[:16]


def make_split(
    records: Sequence[Record], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[str]]:
    """``{"train": [ids], "val": [ids], "test": [ids]}``; same inputs -> same split, whatever their order."""
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be >= 0 and sum to < 1"
        )
    records = sorted(records, key=lambda r: r.id)
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec, key in zip(records, group_keys(records), strict=True):
        groups[key].append(rec)

    order = {c: i for i, c in enumerate(VOCABULARY)}
    strata: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        counts = Counter(r.diagnosis for r in groups[key])
        # majority diagnosis; ties broken by vocabulary order so the result never depends on dict order
        stratum = min(counts, key=lambda c: (-counts[c], order.get(c, len(order))))
        strata[stratum].append(key)

    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[str]] = {s: [] for s in SPLITS}
    group_split: dict[str, str] = {}
    for stratum in sorted(strata, key=lambda c: order.get(c, len(order))):
        keys = strata[stratum]
        perm = rng.permutation(len(keys))
        # largest groups first (the greedy fill stays close to the targets), shuffled among equal sizes
        ranked = sorted(range(len(keys)), key=lambda i: (-len(groups[keys[i]]), perm[i]))
        total = sum(len(groups[k]) for k in keys)
        filled = dict.fromkeys(SPLITS, 0)
        for i in ranked:
            key = keys[i]
            # the split furthest below its target; ties go to train, then val, then test
            split = max(SPLITS, key=lambda s: (fractions[s] * total - filled[s], -SPLITS.index(s)))
            filled[split] += len(groups[key])
            group_split[key] = split

    # A requested split must not come out empty on small data: move the smallest train group into it.
    for split in ("val", "test"):
        if fractions[split] > 0 and not any(v == split for v in group_split.values()):
            train_keys = [k for k, v in group_split.items() if v == "train"]
            if len(train_keys) > 1:
                smallest = min(train_keys, key=lambda k: (len(groups[k]), k))
                group_split[smallest] = split

    for key, split in group_split.items():
        assigned[split].extend(r.id for r in groups[key])
    return {s: sorted(ids) for s, ids in assigned.items()}


def load_or_make_split(
    path: Path, records: Sequence[Record], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Reuse the split file at ``path`` if it is there, else make the split and write it atomically."""
    ids = {r.id for r in records}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            split = {s: list(stored["splits"][s]) for s in SPLITS}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"split file {path} is damaged ({type(err).__name__}: {err}); delete it to recompute the split"
            ) from err
        if set().union(*map(set, split.values())) != ids:
            raise RuntimeError(
                f"split file {path} does not match the data (ids differ); delete it to recompute"
            )
        return split
    split = make_split(records, val_fraction, test_fraction, seed)
    payload = {
        "version": SPLIT_VERSION,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "grouping": "connected components of shared lesion_id / patient_id",
        "sizes": {s: len(v) for s, v in split.items()},
        "splits": split,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{tmp_tag()}")
    tmp.write_text(json.dumps(payload) + "\n")
    os.replace(tmp, path)
    return split
