"""Deterministic train/val/test split: stratified by diagnosis, grouped by lesion and patient.

ISIC holds several images of one lesion (HAM10000 ``lesion_id``) and several lesions of one patient
(ISIC 2020 ``patient_id``). Splitting by image would put near-copies of a test image in the training
set, so whole groups (see :func:`lesion_lightning.data.layouts.group_keys`) are assigned to one
split. Within each diagnosis (a group's majority diagnosis) groups are shuffled with the seed and
placed, largest first, into the split furthest below its target share, which keeps every class in
roughly the requested proportions. Duplicate images (:mod:`lesion_lightning.data.duplicates`) are
passed in as ``links`` and join one group too. The split is written once as JSON and reused.

Pinning: every VQ-VAE checkpoint and index manifest records the split it was made with
(``split_file`` and ``split_digest``, a hash of the assignment itself); later stages read that file
back (:func:`pinned_split`) instead of splitting the files on disk again, and :func:`load_pinned`
refuses, naming how many images moved, when the data no longer matches it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lesion_lightning.data.layouts import Record, group_keys
from lesion_lightning.data.records import name_bytes
from lesion_lightning.data.vocabulary import VOCABULARY
from lesion_lightning.utils.io import atomic_write_text

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_VERSION = 1


SPLIT_CHANGE_MODES: tuple[str, ...] = ("error", "reuse")
Links = Sequence[tuple[str, str]]


def split_digest(
    records: Sequence[Record], val_fraction: float, test_fraction: float, seed: int, links: Links = ()
) -> str:
    """Key of a split's inputs: ids, diagnoses, groups and duplicate links of the records, and the settings."""
    h = hashlib.sha256()
    h.update(json.dumps([SPLIT_VERSION, float(val_fraction), float(test_fraction), int(seed)]).encode())
    for rec in sorted(records, key=lambda r: r.id):
        h.update(name_bytes(f"{rec.id}\t{rec.diagnosis}\t{rec.lesion_id}\t{rec.patient_id}\n"))
    for a, b in sorted(tuple(sorted(pair)) for pair in links):
        h.update(name_bytes(f"dup\t{a}\t{b}\n"))
    return h.hexdigest()[:16]


def assignment_digest(split: Mapping[str, Sequence[str]]) -> str:
    """Hash of which image is in which split: what checkpoints and manifests pin."""
    h = hashlib.sha256()
    for s in SPLITS:
        for rid in sorted(split.get(s, [])):
            h.update(name_bytes(f"{s}\t{rid}\n"))
    return h.hexdigest()[:16]


def make_split(
    records: Sequence[Record],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    links: Links = (),
) -> dict[str, list[str]]:
    """``{"train": [ids], "val": [ids], "test": [ids]}``; same inputs -> same split, whatever their order."""
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be >= 0 and sum to < 1"
        )
    records = sorted(records, key=lambda r: r.id)
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec, key in zip(records, group_keys(records, links), strict=True):
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
    path: Path,
    records: Sequence[Record],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    links: Links = (),
) -> dict[str, list[str]]:
    """Reuse the split file at ``path`` if it is there, else make the split and write it atomically."""
    ids = {r.id for r in records}
    if path.is_file():
        split = read_split_file(path)
        if set().union(*map(set, split.values())) != ids:
            raise RuntimeError(
                f"split file {path} does not match the data (ids differ); delete it to recompute"
            )
        return split
    split = make_split(records, val_fraction, test_fraction, seed, links)
    payload = {
        "version": SPLIT_VERSION,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "grouping": "connected components of shared lesion_id / patient_id and duplicate links",
        "duplicate_links": len(links),
        "digest": assignment_digest(split),
        "sizes": {s: len(v) for s, v in split.items()},
        "splits": split,
    }
    atomic_write_text(path, json.dumps(payload) + "\n")
    return split


def read_split_file(path: Path) -> dict[str, list[str]]:
    try:
        stored = json.loads(path.read_text())
        return {s: list(stored["splits"][s]) for s in SPLITS}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"split file {path} is damaged ({type(err).__name__}: {err}); delete it to recompute the split"
        ) from err


class SplitChangedError(ValueError):
    """The images on disk no longer match a pinned split."""


def load_pinned(
    split_file: str | Path, split_digest: str | None, ids: Sequence[str], on_change: str = "error"
) -> tuple[dict[str, list[str]], list[str]]:
    """(the pinned split, the ids on disk it does not hold) — or :class:`SplitChangedError`.

    ``on_change="reuse"`` keeps the stored assignment of every image that still exists; images added
    since are in no split (returned, for the caller to report).
    """
    path = Path(split_file)
    if on_change not in SPLIT_CHANGE_MODES:
        raise ValueError(f"data.on_split_change={on_change!r} must be one of {list(SPLIT_CHANGE_MODES)}")
    if not path.is_file():
        raise FileNotFoundError(
            f"data.split_file={path}: the split this run is pinned to (recorded in its checkpoint / manifest) "
            f"does not exist; restore it (it lives under data.cache_dir/splits/) or start a new run on this data"
        )
    split = read_split_file(path)
    if split_digest and assignment_digest(split) != split_digest:
        raise SplitChangedError(
            f"data.split_file={path} was rewritten since the checkpoint was made (digest "
            f"{assignment_digest(split)}, pinned {split_digest}); restore the original file or start a new run"
        )
    stored = {i for v in split.values() for i in v}
    present = set(ids)
    added, missing = sorted(present - stored), sorted(stored - present)
    if (added or missing) and on_change == "error":
        examples = ", ".join([*(f"+{i}" for i in added[:3]), *(f"-{i}" for i in missing[:3])])
        raise SplitChangedError(
            f"the data on disk no longer matches the pinned split {path} (digest {split_digest}): "
            f"{len(added) + len(missing)} image(s) moved ({len(added)} added, {len(missing)} missing; {examples}). "
            f"Splitting again would reshuffle whole classes and could put training images into the test split. "
            f"To proceed: restore the data as it was; or set data.on_split_change=reuse to keep the stored split "
            f"for the {len(stored & present)} images that still exist (added images are left out); or start a "
            f"new run (train a new VQ-VAE) on the changed data."
        )
    return {s: [i for i in v if i in present] for s, v in split.items()}, added


def pinned_split(source: Mapping[str, Any] | str | Path) -> dict[str, str]:
    """``{"split_file", "split_digest"}`` recorded in a datamodule state dict or an index manifest, or ``{}``.

    ``source``: a state dict (``{"split_file", ...}``), a manifest dict, or the path of a
    ``manifest.json`` / index-dataset folder. A checkpoint's pin: ``VQVAECheckpoint.pinned_split``.
    """
    if not isinstance(source, Mapping):
        path = Path(source)
        if path.is_dir():
            path = path / "manifest.json"
        if path.suffix != ".json":
            raise ValueError(
                f"{path}: pass a manifest.json or index-dataset folder (checkpoints: VQVAECheckpoint)"
            )
        source = json.loads(path.read_text())
    entry = source.get("LesionDataModule") or source
    if not isinstance(entry, Mapping) or not entry.get("split_file"):
        return {}
    return {"split_file": str(entry["split_file"]), "split_digest": str(entry.get("split_digest") or "")}
