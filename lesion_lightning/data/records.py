"""The two value types every layout reader returns: a usable :class:`Record`, or a :class:`BadItem`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One labelled image: ``id`` is unique within a dataset, ``diagnosis`` a vocabulary class."""

    id: str
    path: Path
    diagnosis: str
    source_label: str = ""
    lesion_id: str = ""
    patient_id: str = ""


@dataclass(frozen=True)
class BadItem:
    """An input problem: ``path`` is the file it concerns (an image or the CSV and row)."""

    id: str
    path: str
    reason: str


def shown(path: str | Path) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 in a file name appear as ``\\xe9``.

    Python keeps such bytes as lone surrogates (PEP 383); they open fine but crash any UTF-8 writer
    (reports, logs, JSON for other tools), so every id and message uses this form instead.
    """
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_bytes(text: str) -> bytes:
    """The exact bytes of a file name, whatever its encoding (for hashing: keys never depend on it)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that did not come from the file system (e.g. from JSON)
        return text.encode("utf-8", "surrogatepass")
