"""Three things that already hold on a shared cluster, pinned so they stay true:

- two processes building the same cache at once (a parallel sweep on one data root) end with one good
  cache and no temporaries;
- a checkpoint whose pickle would run code is refused (weights_only) before anything runs;
- a decompression bomb is a bad image with its reason, not a hang or an out-of-memory kill.
"""

from __future__ import annotations

import builtins
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesion_lightning.data.cache import build_cache, decode, load_cache


def lesion_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _build(args) -> str:
    directory, ids, paths = args
    build_cache(Path(directory), "key", ids, [Path(p) for p in paths], 32, progress=False, workers=1)
    return "ok"


def test_concurrent_builds_of_one_cache_end_with_one_good_cache(tmp_path: Path) -> None:
    paths = lesion_images(tmp_path / "src", 60)
    ids = [p.stem for p in paths]
    directory = tmp_path / "cache"
    job = (str(directory), ids, [str(p) for p in paths])
    with ProcessPoolExecutor(2) as pool:
        assert list(pool.map(_build, [job, job])) == ["ok", "ok"]
    cache = load_cache(directory, "key", ids)
    assert cache is not None and not cache.bad
    expected = np.stack([decode(p, 32)[0] for p in paths])
    assert np.array_equal(cache.images(), expected), "every row is its image, whichever build won"
    assert sorted(p.name for p in directory.iterdir()) == ["images.npy", "index.json", "thumbs.npy"]


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do (with worse than open)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_checkpoints_that_would_run_code_are_refused(tmp_path: Path) -> None:
    from lesion_lightning.modules.checkpoints import ClassifierCheckpoint, PriorCheckpoint, VQVAECheckpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "lesion_lightning": {"module": "VQVAEModule"}, "x": Payload(marker)}, evil)
    for load in (VQVAECheckpoint, PriorCheckpoint, ClassifierCheckpoint):
        with pytest.raises(ValueError, match="not a readable Lightning checkpoint"):
            load(evil)
    assert not marker.exists(), "the payload never ran"


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A 1-bit PNG of side x side pixels (400 MP > 2x PIL's limit) that is ~50 KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_bad_image(tmp_path: Path) -> None:
    paths = [*lesion_images(tmp_path / "src", 2), bomb_png(tmp_path / "src" / "bomb.png")]
    assert paths[-1].stat().st_size < 1_000_000
    cache = build_cache(
        tmp_path / "cache", "k", [p.stem for p in paths], paths, 32, progress=False, workers=1
    )
    assert set(cache.bad) == {2}
    assert "DecompressionBombError" in cache.bad[2], cache.bad[2]
