"""Find the files under a data root: every real folder once, every file once, broken links reported.

Datasets are often assembled from symbolic links (download folders linked into one tree), so links
are followed, with three guards a plain ``os.walk(followlinks=True)`` lacks:

- a link to a folder already visited (``ln -s . again``, or two links to one download) is not
  entered again, so a link loop cannot multiply the images or copy test images into train;
- two paths that reach the same file (same device and inode) are one image, read once, and the
  alias is named in a note;
- a dangling link, a link that points at itself, an unreadable folder or a non-regular file with an
  image extension is a :class:`BadItem` with the reason and what to do, never a traceback later on.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lesion_lightning.data.records import BadItem, shown

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass
class Walk:
    """What :func:`walk` found. ``aliases`` maps a skipped path to the path read for the same file."""

    images: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    bad: list[BadItem] = field(default_factory=list)
    aliases: dict[Path, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def unreadable_reason(path: Path, err: OSError) -> str:
    """Why ``path`` cannot be opened, in words a user can act on."""
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if err.errno == errno.ELOOP:
            return f"symbolic link loop (-> {shown(target)}): the link leads back to itself; remove or fix it"
        if err.errno == errno.ENOENT:
            return f"broken symbolic link (-> {shown(target)}, which does not exist); remove it or restore its target"
    return f"cannot read ({type(err).__name__}: {err.strerror or err}); check the file and its permissions"


def walk(root: Path) -> Walk:
    """Image, CSV and other files under ``root`` (sorted, hidden files and folders skipped)."""
    found = Walk()
    visited: set[tuple[int, int]] = set()
    files: dict[tuple[int, int], Path] = {}
    skipped_links: list[str] = []
    try:
        st = root.stat()
        visited.add((st.st_dev, st.st_ino))
    except OSError as err:
        raise FileNotFoundError(f"data.root {shown(root)}: {unreadable_reason(root, err)}") from err

    def on_error(err: OSError) -> None:  # os.walk would otherwise drop an unreadable folder silently
        where = Path(err.filename) if err.filename else root
        found.bad.append(
            BadItem(_rel(where, root), shown(where), f"folder not readable: {unreadable_reason(where, err)}")
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if name.startswith("."):
                continue
            path = here / name
            try:
                st = path.stat()
            except OSError as err:
                found.bad.append(BadItem(_rel(path, root), shown(path), unreadable_reason(path, err)))
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:  # a link back into the tree (or a second link to one folder)
                skipped_links.append(_rel(path, root))
                continue
            visited.add(key)
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            suffix = path.suffix.lower()
            wanted = suffix in IMAGE_EXTENSIONS or suffix == ".csv"
            try:
                st = path.stat()
            except OSError as err:
                if wanted:
                    found.bad.append(BadItem(_rel(path, root), shown(path), unreadable_reason(path, err)))
                continue
            if not stat.S_ISREG(st.st_mode):
                if wanted:
                    found.bad.append(BadItem(_rel(path, root), shown(path), "not a regular file; remove it"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in files:
                found.aliases[path] = files[key]
                continue
            files[key] = path
            if suffix in IMAGE_EXTENSIONS:
                found.images.append(path)
            elif suffix == ".csv":
                found.csvs.append(path)
            else:
                found.others.append(path)
    if skipped_links:
        found.notes.append(
            f"not entered again: {len(skipped_links)} link(s) to a folder already read "
            f"({', '.join(skipped_links[:5])}{', ...' if len(skipped_links) > 5 else ''})"
        )
    image_aliases = [(p, q) for p, q in found.aliases.items() if p.suffix.lower() in IMAGE_EXTENSIONS]
    if image_aliases:
        found.notes.append(
            f"{len(image_aliases)} image path(s) lead to a file already found and were read once: "
            + ", ".join(f"{_rel(p, root)} = {_rel(q, root)}" for p, q in image_aliases[:5])
            + (", ..." if len(image_aliases) > 5 else "")
        )
    return found


def _rel(path: Path, root: Path) -> str:
    try:
        return shown(path.relative_to(root).as_posix())
    except ValueError:
        return shown(path)
