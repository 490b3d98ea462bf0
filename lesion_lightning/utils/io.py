"""Atomic file writes: a crash never leaves a half-written output under its final name.

One temporary-name scheme for every writer: ``.<name>.tmp-<host>-<pid>`` in the same folder (same file
system, so the rename is atomic; host and pid so `data.stale.remove_stale_temporaries` can tell a dead
run's leftover from a live one's, also on a shared file system).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image


def tmp_tag() -> str:
    """The suffix every temporary carries: ``tmp-<host>-<pid>``."""
    return f"tmp-{socket.gethostname()}-{os.getpid()}"


def tmp_path(path: str | Path) -> Path:
    """The temporary sibling a writer fills before renaming it to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tmp_tag()}")


def atomic_write(path: str | Path, write_fn: Callable[[Path], Any]) -> Path:
    """``write_fn(tmp)`` writes the file (or folder) ``tmp``; it is then renamed to ``path``.

    A failure inside ``write_fn`` removes the temporary and leaves ``path`` as it was. A folder may
    replace only an absent or empty folder (the rename's rule), so a finished one is never clobbered.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    _remove(tmp)  # left by an earlier crashed run that had the same pid
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json_object(path: Path, remedy: str) -> dict:
    """A hand-off file's JSON object; ValueError naming the file and `remedy` (what to do) otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not readable JSON ({type(err).__name__}: {err}); {remedy}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; {remedy}")
    return data


def to_uint8_hwc(image: torch.Tensor):
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 numpy."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save a (3, H, W) float image in [0, 1] as PNG, atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(to_uint8_hwc(image)).save(tmp, format="PNG"))


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG, atomically (the caller closes it)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
