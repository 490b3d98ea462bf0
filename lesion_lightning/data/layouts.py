"""Detect and read the on-disk layouts of ISIC data into one list of :class:`Record`.

Layouts (``data.layout``; ``auto`` detects them from the CSV headers found under ``data.root``):

``isic_archive``  an ``isic image download`` folder: ``<isic_id>.jpg`` + ``metadata.csv`` (column
                  ``isic_id``; diagnosis in ``diagnosis`` or ``diagnosis_1``..``diagnosis_5``; ``lesion_id``,
                  ``patient_id`` when present). Several CSVs with ``isic_id`` are merged.
``isic2018``      ISIC 2018 Task 3 / HAM10000: the one-hot ground truth ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``
                  and/or ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,...``) and/or
                  ``ISIC2018_Task3_Training_LesionGroupings.csv`` (``image,lesion_id,...``); images in any
                  sub-folder (``ISIC2018_Task3_Training_Input/``, ``HAM10000_images_part_1/`` + ``_part_2/``).
``isic2019``      the one-hot ground truth ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`` and
                  ``ISIC_2019_Training_Metadata.csv`` (``image,...,lesion_id,...``).
``isic2020``      ``train.csv`` / ``ISIC_2020_Training_GroundTruth*.csv`` (``image_name,patient_id,...,
                  diagnosis,benign_malignant,target``; ``_v2`` adds ``lesion_id``) with ``train/`` images.
``folder``        any folder of images (searched recursively), no labels: every image is ``unknown``.

Images are found anywhere under the root (hidden folders such as ``.lesion_cache`` are skipped) and
matched to CSV rows by file stem. Folders that hold none of the labelled images (``test/``,
``ISIC2018_Task3_Test_Input/``) are ignored and listed in :attr:`LayoutResult.notes`.

Record-level problems are returned in :attr:`LayoutResult.bad` (never dropped silently): a CSV row
without an image, an image in a labelled folder without a CSV row, duplicate ids (two files with one
stem, or one id twice in a CSV, or two CSVs disagreeing on its label), an unrecognised diagnosis
string, a one-hot row with no or several positive columns, and what :mod:`~lesion_lightning.data.walk`
finds (broken or looping links, unreadable folders). An empty folder, an empty (0-byte) CSV and a
label CSV with a header but no rows raise at once, naming the file (``data.layout=folder`` reads the
images without labels on purpose). isic2018/isic2019 data without any ``lesion_id`` is read with a
warning naming the groupings file that is missing.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lesion_lightning.data.records import BadItem, Record, shown
from lesion_lightning.data.vocabulary import CODES, map_flat, map_hierarchical
from lesion_lightning.data.walk import IMAGE_EXTENSIONS, Walk, walk

LAYOUTS: tuple[str, ...] = ("isic_archive", "isic2018", "isic2019", "isic2020", "folder")

ONEHOT_2018: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ONEHOT_2019: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
_HIERARCHY = tuple(f"diagnosis_{i}" for i in range(1, 6))


@dataclass
class LayoutResult:
    layout: str
    records: list[Record]
    bad: list[BadItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Csv:
    path: Path
    columns: list[str]
    rows: list[dict[str, str]]


@dataclass
class _Label:
    """What the CSVs say about one id, accumulated over all of them."""

    diagnosis: str | None = None  # vocabulary class; None while only groupings were seen
    source_label: str = ""
    where: str = ""  # "file.csv row N" of the label
    lesion_id: str = ""
    patient_id: str = ""


def _read_csv(path: Path) -> _Csv:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [
                {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
                for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{shown(path)}: cannot read as CSV ({e}); fix or remove the file") from e
    except OSError as e:
        raise ValueError(f"{shown(path)}: cannot open ({e.strerror or e}); fix or remove the file") from e
    return _Csv(path, columns, rows)


def _check_not_empty(root: Path, tables: list[_Csv]) -> None:
    """An empty CSV in a data folder is a truncated download or copy, not "no labels": say so.

    Detection would otherwise skip it and read the folder as unlabelled images (every image
    ``unknown``), silently; ``data.layout=folder`` is the explicit way to want that.
    """
    for table in tables:
        if not table.columns:
            raise ValueError(
                f"{shown(table.path)} is empty (no header row): the labels of the images under {shown(root)} "
                f"cannot be read. Restore the file (e.g. download the metadata again), or set "
                f"data.layout=folder to use the images without labels (every image `unknown`)."
            )


def _kind(table: _Csv) -> str | None:
    """Which layout a CSV belongs to, from its header."""
    cols = set(table.columns)
    if "isic_id" in cols:
        return "isic_archive"
    if "image" in cols and set(ONEHOT_2019) <= cols:
        return "isic2019"
    if "image" in cols and set(ONEHOT_2018) <= cols:
        return "isic2018"
    if {"image_id", "dx"} <= cols:  # HAM10000_metadata.csv
        return "isic2018"
    # a label column, not just `target`: Kaggle's sample_submission.csv (image_name,target) lists test images
    if "image_name" in cols and cols & {"diagnosis", "benign_malignant"}:
        return "isic2020"
    if "image" in cols and "lesion_id" in cols:  # 2018 lesion groupings or 2019 metadata: groups only
        return "groups"
    return None


def detect_layout(root: str | Path) -> str:
    """The layout of ``root`` (see the module docstring); raises if it holds no images."""
    found = walk(Path(root))
    tables = [_read_csv(p) for p in found.csvs]
    _check_not_empty(Path(root), tables)
    return _detect(Path(root), found.images, tables)


def _detect(root: Path, images: list[Path], tables: list[_Csv]) -> str:
    kinds = {_kind(t) for t in tables}
    for layout in ("isic_archive", "isic2019", "isic2018", "isic2020"):
        if layout in kinds:
            return layout
    if images:
        return "folder"
    raise FileNotFoundError(
        f"data.root {shown(root)} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) and no ISIC metadata "
        f"CSV; point data.root at an ISIC download or an image folder, or use data=synthetic"
    )


def _onehot_label(row: dict[str, str], columns: tuple[str, ...]) -> tuple[str | None, str]:
    positives = []
    for col in columns:
        try:
            if float(row.get(col) or 0.0) > 0.5:
                positives.append(col)
        except ValueError:
            return None, f"non-numeric value {row.get(col)!r} in one-hot column {col}"
    if len(positives) != 1:
        return None, f"one-hot row has {len(positives)} positive columns ({', '.join(positives) or 'none'})"
    return CODES[positives[0].lower()], positives[0]


def _row_label(kind: str, table: _Csv, row: dict[str, str]) -> tuple[str | None, str]:
    """(vocabulary class or None if unrecognised, source label text) of a label row."""
    cols = set(table.columns)
    if kind == "isic2019":
        return _onehot_label(row, ONEHOT_2019)
    if kind == "isic2018" and set(ONEHOT_2018) <= cols:
        return _onehot_label(row, ONEHOT_2018)
    if kind == "isic2018":  # HAM10000_metadata.csv
        return map_flat(row["dx"]), row["dx"]
    if kind == "isic_archive" and cols & set(_HIERARCHY):
        levels = [row.get(c, "") for c in _HIERARCHY]
        text = " :: ".join(v for v in levels if v)
        return map_hierarchical(levels), text
    if "diagnosis" in cols:
        text = row["diagnosis"]
        diagnosis = map_flat(text)
        # ISIC 2020: every malignant image is a melanoma; "unknown" + target 1 still means melanoma.
        if diagnosis == "unknown" and row.get("target", "").strip() in ("1", "1.0"):
            return "melanoma", text + " (target=1)"
        return diagnosis, text
    if "target" in cols:
        target = row["target"].strip()
        if target in ("1", "1.0"):
            return "melanoma", "target=1"
        if target in ("0", "0.0"):
            return "unknown", "target=0"
        return None, f"target={target}"
    return "unknown", ""  # isic_archive metadata without any diagnosis column: unlabelled


_ID_COLUMNS = ("isic_id", "image_id", "image_name", "image")


def _id_column(table: _Csv) -> str:
    for col in _ID_COLUMNS:
        if col in table.columns:
            return col
    raise AssertionError(f"{table.path} has no id column")


def read_layout(root: str | Path, layout: str = "auto") -> LayoutResult:
    """Read ``root`` into records (labels mapped to the vocabulary) plus the problems found.

    ``layout="auto"`` detects it; forcing a layout whose CSVs are missing raises FileNotFoundError.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {shown(root)} is not a folder")
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"data.layout={layout!r} is not one of {['auto', *LAYOUTS]}")
    found = walk(root)
    tables = [_read_csv(p) for p in found.csvs]
    if layout == "auto":
        _check_not_empty(root, tables)
        layout = _detect(root, found.images, tables)
    if layout == "folder":
        result = _read_folder(root, found, tables)
    else:
        result = _read_labelled(root, layout, found, tables)
    result.bad[:0] = found.bad
    result.notes[:0] = found.notes
    return result


def _read_folder(root: Path, found: Walk, tables: list[_Csv]) -> LayoutResult:
    if not found.images:
        raise FileNotFoundError(
            f"data.root {shown(root)} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            f"point data.root at a folder of images or use data=synthetic"
        )
    # The id is the relative path, so equal file names in different sub-folders never collide.
    records = [
        Record(id=shown(p.relative_to(root).as_posix()), path=p, diagnosis="unknown") for p in found.images
    ]
    notes = []
    if tables:
        notes.append(
            f"folder layout: ignored CSV files with no recognised ISIC columns: "
            f"{', '.join(shown(t.path.relative_to(root)) for t in tables[:5])}"
        )
    skipped = [p for p in found.others if p.suffix.lower() not in (".txt", ".json", ".md")]
    if skipped:
        notes.append(
            f"folder layout: ignored {len(skipped)} non-image file(s), e.g. "
            f"{', '.join(shown(p.relative_to(root)) for p in skipped[:5])}"
        )
    return LayoutResult("folder", records, [], notes)


def _read_labelled(root: Path, layout: str, found: Walk, tables: list[_Csv]) -> LayoutResult:
    label_tables = [t for t in tables if _kind(t) == layout]
    group_tables = [t for t in tables if _kind(t) == "groups" and layout in ("isic2018", "isic2019")]
    if not label_tables:
        raise FileNotFoundError(
            f"data.layout={layout}: no {layout} ground-truth/metadata CSV found under {shown(root)} "
            f"(found: {[shown(t.path.relative_to(root)) for t in tables] or 'no CSV'}); "
            f"use data.layout=auto or check data.root"
        )
    if not any(t.rows for t in label_tables):
        names = ", ".join(shown(t.path) for t in label_tables)
        raise ValueError(
            f"{names}: header but no rows, so no image under {shown(root)} is labelled. Restore the "
            f"metadata (e.g. download it again), or set data.layout=folder to use the images without labels."
        )
    labels, bad, bad_ids = _collect_labels(layout, label_tables)
    _add_groups(group_tables, labels)
    records, matched = _match_images(root, labels, bad_ids, found, bad)
    notes = _unlisted_images(root, layout, found.images, matched, {r.path.parent for r in records}, bad)
    _warn_missing_groupings(root, layout, records, group_tables, notes)
    records.sort(key=lambda r: r.id)
    return LayoutResult(layout, records, bad, notes)


def _collect_labels(
    layout: str, label_tables: list[_Csv]
) -> tuple[dict[str, _Label], list[BadItem], set[str]]:
    """Every id's label over all label CSVs; rows that cannot be used become bad items (their ids too)."""
    bad: list[BadItem] = []
    labels: dict[str, _Label] = {}
    bad_ids: set[str] = set()
    for table in label_tables:
        id_col = _id_column(table)
        seen_here: dict[str, int] = {}
        for n, row in enumerate(table.rows, start=2):  # row 1 is the header
            image_id = row.get(id_col, "")
            where = f"{table.path.name} row {n}"
            if not image_id:
                bad.append(BadItem("", str(table.path), f"{where}: empty {id_col}"))
                continue
            if image_id in seen_here:
                bad.append(
                    BadItem(
                        image_id,
                        str(table.path),
                        f"duplicate id: rows {seen_here[image_id]} and {n} of {table.path.name}",
                    )
                )
                bad_ids.add(image_id)
                continue
            seen_here[image_id] = n
            diagnosis, text = _row_label(layout, table, row)
            if diagnosis is None:
                bad.append(
                    BadItem(
                        image_id,
                        str(table.path),
                        f"{where}: unrecognised diagnosis {text!r} (see lesion_lightning/data/vocabulary.py)",
                    )
                )
                bad_ids.add(image_id)
                continue
            entry = labels.setdefault(image_id, _Label())
            if entry.diagnosis is not None and entry.diagnosis != diagnosis:
                bad.append(
                    BadItem(
                        image_id,
                        str(table.path),
                        f"conflicting labels: {entry.where} says {entry.diagnosis}, {where} says {diagnosis}",
                    )
                )
                bad_ids.add(image_id)
                continue
            if entry.diagnosis is None:
                entry.diagnosis, entry.source_label, entry.where = diagnosis, text, where
            entry.lesion_id = entry.lesion_id or row.get("lesion_id", "")
            entry.patient_id = entry.patient_id or row.get("patient_id", "")
    return labels, bad, bad_ids


def _add_groups(group_tables: list[_Csv], labels: dict[str, _Label]) -> None:
    """Lesion groupings / 2019 metadata only add lesion and patient ids to already labelled ids."""
    for table in group_tables:
        id_col = _id_column(table)
        for row in table.rows:
            entry = labels.get(row.get(id_col, ""))
            if entry is not None:
                entry.lesion_id = entry.lesion_id or row.get("lesion_id", "")
                entry.patient_id = entry.patient_id or row.get("patient_id", "")


def _match_images(
    root: Path, labels: dict[str, _Label], bad_ids: set[str], found: Walk, bad: list[BadItem]
) -> tuple[list[Record], set[str]]:
    """Records for labelled ids with exactly one image file; the file stems the CSVs claim."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in found.images:
        by_stem[path.stem].append(path)
    reported = {Path(item.path).stem for item in found.bad}  # broken links etc., already listed
    aliases = {p.stem: q for p, q in found.aliases.items()}
    records: list[Record] = []
    referenced: set[str] = set(bad_ids)  # duplicate-row / conflicting ids still claim their image file
    for image_id, entry in labels.items():
        if image_id in bad_ids:
            continue
        stem = image_id
        paths = by_stem.get(stem) or by_stem.get(f"{stem}_downsampled", [])  # ISIC 2019 names some files so
        if paths:
            stem = paths[0].stem
        referenced.add(stem)
        if not paths:
            if image_id in reported:
                continue
            hint = (
                f"; {shown(image_id)}.* is a link to {shown(aliases[image_id].relative_to(root))}, "
                f"which another id already uses"
                if image_id in aliases
                else ""
            )
            bad.append(
                BadItem(
                    image_id,
                    entry.where,
                    f"CSV row without an image: no {image_id}.jpg/.png under {shown(root)}{hint}",
                )
            )
            continue
        if len(paths) > 1:
            listing = ", ".join(shown(p.relative_to(root)) for p in paths)
            bad.append(
                BadItem(image_id, shown(paths[0]), f"duplicate id: several files named {stem}.*: {listing}")
            )
            continue
        records.append(
            Record(
                id=image_id,
                path=paths[0],
                diagnosis=entry.diagnosis or "unknown",
                source_label=entry.source_label,
                lesion_id=entry.lesion_id,
                patient_id=entry.patient_id,
            )
        )
    return records, referenced


def _unlisted_images(
    root: Path,
    layout: str,
    images: list[Path],
    referenced: set[str],
    used_dirs: set[Path],
    bad: list[BadItem],
) -> list[str]:
    """Images no CSV row claims: bad next to labelled images, ignored (with a note) in other folders."""
    ignored: dict[Path, int] = defaultdict(int)
    for path in images:
        if path.stem in referenced:
            continue
        if path.parent in used_dirs:
            bad.append(
                BadItem(
                    shown(path.stem),
                    shown(path),
                    "image not listed in any CSV (no label); add a row or remove the file",
                )
            )
        else:
            ignored[path.parent] += 1
    return [
        f"{layout}: ignored {count} image(s) in {shown(folder.relative_to(root)) if folder != root else '.'} "
        f"(no labelled images in that folder, e.g. a test set)"
        for folder, count in sorted(ignored.items())
    ]


# Where each layout's lesion ids come from when its label CSV lacks them.
_GROUPINGS_SOURCE = {
    "isic2018": "ISIC2018_Task3_Training_LesionGroupings.csv (ISIC 2018 Task 3 download) or HAM10000_metadata.csv "
    "(HAM10000 release, Harvard Dataverse)",
    "isic2019": "ISIC_2019_Training_Metadata.csv (ISIC 2019 challenge download)",
}


def _warn_missing_groupings(
    root: Path, layout: str, records: list[Record], group_tables: list[_Csv], notes: list[str]
) -> None:
    """These releases hold several images per lesion; without lesion ids each image is its own group."""
    if layout not in _GROUPINGS_SOURCE or not records or any(r.lesion_id for r in records):
        return
    notes.append(
        f"{layout}: no lesion_id for any image under {shown(root)}, so every image is its own group and "
        f"images of one lesion can land in different splits. Add {_GROUPINGS_SOURCE[layout]} to data.root; "
        f"until then only duplicate detection (data.duplicates) protects the split."
    )


def group_keys(records: Iterable[Record], links: Iterable[tuple[str, str]] = ()) -> list[str]:
    """One group per connected set of records sharing a ``lesion_id`` or a ``patient_id``, or linked.

    Union-find over both ids and the ``links`` (pairs of record ids: duplicate images), so neither
    two images of one lesion, two lesions of one patient nor two copies of one photograph can land
    in different splits; a record with none of these is its own group.
    """
    records = list(records)
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(records):
        for kind, value in (("lesion", rec.lesion_id), ("patient", rec.patient_id)):
            if not value:
                continue
            j = first.setdefault((kind, value), i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    row = {rec.id: i for i, rec in enumerate(records)}
    for a, b in links:
        if a in row and b in row:
            ri, rj = find(row[a]), find(row[b])
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return [records[find(i)].id for i in range(len(records))]
