"""The steps of ``LesionDataModule`` preparation, one job each: read the inputs, cache the images
(reporting bad ones), find duplicates, choose the split.

Each step takes plain values and returns plain values, so the datamodule only strings them together.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lesion_lightning.data.cache import Cache, build_cache, cache_key, fingerprint, load_cache
from lesion_lightning.data.duplicates import (
    PICTURE_FILE,
    REPORT_FILE,
    Duplicates,
    find_duplicates,
    write_picture,
    write_report,
)
from lesion_lightning.data.layouts import BadItem, LayoutResult, Record, read_layout
from lesion_lightning.data.records import shown
from lesion_lightning.data.splits import (
    load_or_make_split,
    load_pinned,
    make_split,
    split_digest,
)
from lesion_lightning.data.stale import remove_stale_temporaries
from lesion_lightning.utils.io import atomic_write, atomic_write_text

BAD_REPORT = "bad_images.csv"


# ---------------------------------------------------------------------------------------------- inputs
def read_inputs(root: Path, layout: str) -> tuple[LayoutResult, list[Record], list[tuple[str, int, int]]]:
    """(the layout read, its records whose files can be stat'ed, their fingerprints); notes are warned."""
    result = read_layout(root, layout)
    for note in result.notes:
        rank_zero_warn(note)
    kept, fingerprints = [], []
    for rec in result.records:
        try:
            fingerprints.append(fingerprint(rec.path, root))
        except OSError as err:  # vanished or became unreadable since the folder was listed
            result.bad.append(BadItem(rec.id, shown(rec.path), f"cannot read ({err.strerror or err})"))
            continue
        kept.append(rec)
    return result, kept, fingerprints


def remove_stale(cache_root: Path) -> None:
    """Delete what killed cache builds and split writes left behind (see :mod:`.stale`)."""
    if not cache_root.is_dir():
        return
    folders = [cache_root, *(p for p in cache_root.iterdir() if p.is_dir() and ".tmp-" not in p.name)]
    removed = [line for folder in folders for line in remove_stale_temporaries(folder)]
    if removed:
        rank_zero_warn(
            f"removed {len(removed)} temporary file(s) left by interrupted runs: " + "; ".join(removed[:5])
        )


# ---------------------------------------------------------------------------------------------- cache
@dataclass
class CacheSettings:
    image_size: int
    resize: str
    min_image_size: int
    on_bad_image: str
    workers: int | None


def cache_images(
    root: Path,
    layout: LayoutResult,
    records: list[Record],
    fingerprints: list[tuple[str, int, int]],
    cache_root: Path,
    settings: CacheSettings,
) -> tuple[Cache, list[BadItem], Path]:
    """Build or reuse the cache of ``records``; (cache, every bad input, the bad-input report path).

    With ``on_bad_image=error`` any bad input raises (naming the files, all listed in the report).
    """
    # an image at least as large as the target is never "too small", whatever data.min_image_size says
    min_size = min(settings.min_image_size, settings.image_size)
    key = cache_key(fingerprints, settings.image_size, settings.resize, min_size)
    entry = cache_root / key
    report = entry / BAD_REPORT
    if layout.bad and settings.on_bad_image == "error":
        write_bad_report(report, layout.bad)
        raise ValueError(bad_message(layout.bad, report))
    if not records:
        if layout.bad:
            write_bad_report(report, layout.bad)
        where = f"; every input is bad, see {report}" if layout.bad else ""
        raise ValueError(f"data.root={shown(root)} ({layout.layout} layout) has no usable images{where}")
    ids = [r.id for r in records]
    cache = load_cache(entry, key, ids)
    if cache is None:
        rank_zero_info(f"building the {settings.image_size}px image cache for {len(ids)} images in {entry}")
        cache = build_cache(
            entry,
            key,
            ids,
            [r.path for r in records],
            settings.image_size,
            settings.resize,
            min_size,
            workers=settings.workers,
        )
    bad = list(layout.bad) + [
        BadItem(ids[i], shown(records[i].path), reason) for i, reason in sorted(cache.bad.items())
    ]
    if bad:
        write_bad_report(report, bad)
    else:
        report.unlink(missing_ok=True)
    if bad and settings.on_bad_image == "error":
        raise ValueError(bad_message(bad, report))
    if bad:
        rank_zero_warn(
            f"data.on_bad_image=skip: left out {len(bad)} bad input(s), listed with reasons in {report}"
        )
    return cache, bad, report


def write_bad_report(path: Path, bad: Sequence[BadItem]) -> None:
    def write(tmp: Path) -> None:
        # backslashreplace: a path that is not valid UTF-8 is written escaped, never a UnicodeEncodeError
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "path", "reason"])
            for item in bad:
                writer.writerow([item.id, item.path, item.reason])

    atomic_write(path, write)


def bad_message(bad: Sequence[BadItem], report: Path, shown_items: int = 10) -> str:
    lines = [f"  {item.path}: {item.reason}" for item in bad[:shown_items]]
    if len(bad) > shown_items:
        lines.append(f"  ... and {len(bad) - shown_items} more")
    return (
        f"{len(bad)} bad input(s) found (all listed in {report}):\n"
        + "\n".join(lines)
        + "\nFix or remove these files / CSV rows, or set data.on_bad_image=skip to train without them."
    )


# ---------------------------------------------------------------------------------------------- duplicates
@dataclass
class DuplicateResult:
    """``usable``: the records that go into the split; ``links``: id pairs to keep in one split."""

    usable: list[Record]
    links: list[tuple[str, str]]
    found: Duplicates
    dropped: set[int] = field(default_factory=set)


def group_duplicates(
    records: list[Record], cache: Cache, threshold: float | None, mode: str
) -> DuplicateResult:
    """Find duplicates among the readable records; ``mode`` group | drop | keep (see docs/data.md)."""
    readable = [i for i in range(len(records)) if i not in cache.bad]
    found = _load_or_find(cache, records, threshold)
    dropped: set[int] = set()
    links: list[tuple[str, str]] = []
    if mode == "drop":  # keep the first image (by id order) of each group
        dropped = {i for g in found.groups for i in g[1:]}
    elif mode == "group":
        links = [(records[a].id, records[b].id) for a, b in found.pairs()]
    usable = [records[i] for i in readable if i not in dropped]
    return DuplicateResult(usable, links, found, dropped)


def _load_or_find(cache: Cache, records: list[Record], threshold: float | None) -> Duplicates:
    """Duplicates of a cache at a threshold, computed once and kept next to the cache."""
    name = "off" if threshold is None else f"{float(threshold):.6g}"
    path = cache.directory / f"duplicates-{name}.json"
    try:
        stored = json.loads(path.read_text())
        links = {(int(i), int(j)): (str(k), float(d)) for i, j, k, d in stored["links"]}
        return Duplicates([list(map(int, g)) for g in stored["groups"]], links)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if any(c is None for i, c in enumerate(cache.contents) if i not in cache.bad):
        raise RuntimeError(
            f"the cache {cache.directory} holds no duplicate-detection data; delete it to rebuild"
        )
    found = find_duplicates(cache.contents, cache.thumbs(), [r.path for r in records], threshold)
    payload = {
        "groups": found.groups,
        "links": [[i, j, k, d] for (i, j), (k, d) in sorted(found.links.items())],
    }
    atomic_write_text(path, json.dumps(payload) + "\n")
    return found


def report_duplicates(
    result: DuplicateResult,
    records: list[Record],
    cache: Cache,
    split: dict[str, list[str]],
    would_be: dict[str, list[str]] | None,
    mode: str,
    threshold: float | None,
) -> dict:
    """Write ``duplicates.csv`` (+ a picture of near pairs) next to the cache; print and return a summary."""
    found = result.found
    ids = [r.id for r in records]
    split_of = {i: s for s, members in split.items() for i in members}
    report = cache.directory / REPORT_FILE
    picture = cache.directory / PICTURE_FILE
    kinds = found.kinds(len(records))
    summary = {
        "mode": mode,
        "near_threshold": threshold,
        "groups": len(found.groups),
        "images": found.num_images,
        "exact_copies": sum(1 for _, _, k in kinds if k == "exact"),
        "near_copies": sum(1 for _, _, k in kinds if k == "near"),
        "dropped": len(result.dropped),
        "crossing_splits": _crossing(found, ids, split_of),
        "would_cross_without_grouping": None if would_be is None else _crossing(found, ids, _owner(would_be)),
        "report": str(report) if found.groups else None,
        "picture": None,
    }
    if not found.groups:
        report.unlink(missing_ok=True)
        picture.unlink(missing_ok=True)
        return summary
    write_report(report, found, cache.thumbs(), ids, [r.path for r in records], split_of, result.dropped)
    if write_picture(picture, found, ids, cache.images()):
        summary["picture"] = str(picture)
    crossing = summary["would_cross_without_grouping"]
    rank_zero_info(
        f"duplicates (data.duplicates={mode}, data.near_duplicate_threshold={threshold}): "
        f"{summary['groups']} group(s) of {summary['images']} images ({summary['exact_copies']} exact and "
        f"{summary['near_copies']} near copies)"
        + (
            f"; {crossing} group(s) would have crossed splits without grouping"
            if crossing is not None
            else ""
        )
        + (f"; {len(result.dropped)} dropped" if result.dropped else "")
        + f". Listed in {report}"
        + (f", near pairs pictured in {picture}" if summary["picture"] else "")
    )
    if summary["crossing_splits"]:
        rank_zero_warn(
            f"{summary['crossing_splits']} duplicate group(s) span more than one split "
            f"(data.duplicates={mode}); see {report}"
        )
    return summary


def _owner(split: dict[str, list[str]]) -> dict[str, str]:
    return {i: s for s, members in split.items() for i in members}


def _crossing(found: Duplicates, ids: list[str], split_of: dict[str, str]) -> int:
    return sum(1 for g in found.groups if len({split_of[ids[i]] for i in g if ids[i] in split_of}) > 1)


# ---------------------------------------------------------------------------------------------- split
@dataclass
class SplitSettings:
    val_fraction: float
    test_fraction: float
    seed: int
    split_file: str | None
    split_digest: str | None
    on_split_change: str


def choose_split(
    cache_root: Path, dups: DuplicateResult, settings: SplitSettings
) -> tuple[Path, dict[str, list[str]], dict[str, list[str]] | None]:
    """(split file, split, the split without duplicate links or None when pinned).

    A pinned split (``data.split_file``) is used as stored, or refused when the data moved; otherwise
    the split is made from the usable records (or read back from the file its inputs name).
    """
    usable = dups.usable
    if not usable:
        raise ValueError("no readable images to split; see the bad-input report")
    if settings.split_file:
        split, added = load_pinned(
            settings.split_file, settings.split_digest, [r.id for r in usable], settings.on_split_change
        )
        if added:
            rank_zero_warn(
                f"data.on_split_change=reuse: {len(added)} image(s) added since the split {settings.split_file} "
                f"was made are left out (e.g. {', '.join(added[:3])})"
            )
        return Path(settings.split_file), split, None
    args = (settings.val_fraction, settings.test_fraction, settings.seed)
    name = f"split-{split_digest(usable, *args, dups.links)}.json"
    split_file = cache_root / "splits" / name
    split = load_or_make_split(split_file, usable, *args, dups.links)
    would_be = make_split(usable, *args) if dups.links else split
    return split_file, split, would_be
