"""Device choice and temporary-folder publishing shared by the non-training entry points."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from lesion_lightning.utils.io import tmp_path


def pick_device(name: str, key: str = "device") -> torch.device:
    """`auto` (CUDA when visible, else CPU), `cpu`, `cuda` or `cuda:N`; `key` names the config key in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key}={name} but no CUDA device is visible; use {key}=cpu or {key}=auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"{key} must be auto, cpu or cuda[:N], got {name!r}") from err


@contextmanager
def publish_dir(final: str | Path, overwrite: bool = False, what: str = "output"):
    """Yield a temporary sibling folder; rename it to `final` only when the block completes.

    An interrupted run leaves `final` untouched (absent or the previous complete version), never
    half-written.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"{what} folder {final} already exists; pass overwrite=true or choose another path"
        )
    tmp = tmp_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
