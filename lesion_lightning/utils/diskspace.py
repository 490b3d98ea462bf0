"""Free space before a large write, and a full disk reported as one: path, bytes, and the way out.

The cache build (N x S x S x 3 bytes), encode (N x H x W x 2 bytes per split), sample (the PNGs) and
checkpoint writes know what they are about to write. :func:`ensure_free_space` refuses early when the
file system holding the path has less free; :func:`reporting_disk_errors` turns a write that fails anyway
(ENOSPC, EFBIG, EDQUOT: a quota, a file-size limit, another job filling the disk meanwhile) into the
same message, after removing the temporaries it names.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# errno values that mean "no room for this write" (EDQUOT is missing on some platforms)
DISK_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if e is not None
)


class DiskSpaceError(OSError):
    """Not enough space (or quota) for a write; the message names the path, the sizes and the way out."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - loop always returns


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the file system that holds (or will hold) ``path``."""
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def _message(what: str, path: Path, needed: int | None, free: int | None, hint: str, cause: str = "") -> str:
    sizes = []
    if needed is not None:
        sizes.append(f"needs {human_bytes(needed)} ({needed} bytes)")
    if free is not None:
        sizes.append(f"{human_bytes(free)} ({free} bytes) free")
    return (
        f"not enough disk space for the {what} at {path}"
        + (f": {', '.join(sizes)}" if sizes else "")
        + (f" ({cause})" if cause else "")
        + f". Free some space there or write elsewhere: {hint}"
    )


def ensure_free_space(path: str | Path, needed: int, what: str, hint: str) -> None:
    """Raise :class:`DiskSpaceError` unless the file system of ``path`` has ``needed`` bytes free.

    ``hint`` names the config key that moves the output (``data.cache_dir=...``, ``paths.log_dir=...``).
    """
    path = Path(path)
    free = free_bytes(path)
    if free < needed:
        raise DiskSpaceError(errno.ENOSPC, _message(what, path, needed, free, hint))


def raise_if_disk_error(
    err: OSError, path: str | Path, what: str, hint: str, needed: int | None = None
) -> None:
    """Raise :class:`DiskSpaceError` from ``err`` when it is ENOSPC / EFBIG / EDQUOT (else return)."""
    if isinstance(err, DiskSpaceError) or err.errno not in DISK_ERRNOS:
        return
    try:
        free = free_bytes(path)
    except OSError:
        free = None
    cause = f"{errno.errorcode.get(err.errno, err.errno)}: {err.strerror or err}"
    raise DiskSpaceError(err.errno, _message(what, Path(path), needed, free, hint, cause)) from err


@contextmanager
def reporting_disk_errors(
    path: str | Path, what: str, hint: str, needed: int | None = None, temporaries: Iterable[Path] = ()
) -> Iterator[None]:
    """Re-raise a failed write (ENOSPC, EFBIG, EDQUOT) as :class:`DiskSpaceError`, its temporaries removed."""
    try:
        yield
    except DiskSpaceError:
        _remove(temporaries)
        raise
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            _remove(temporaries)
        raise_if_disk_error(err, path, what, hint, needed)
        raise


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        p = Path(p)
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except OSError:
            pass


def tensor_bytes(obj) -> int:
    """Bytes of every tensor inside nested dicts/lists (a state_dict, an optimizer state)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0
