"""One-time resized image cache: one uint8 ``.npy`` array ``(N, S, S, 3)`` + a JSON index.

Decoding full-size ISIC JPEGs (up to 6000x4000) every epoch starves the GPU, so images are decoded,
EXIF-rotated, converted to RGB and resized once, in parallel, into ``<cache_dir>/<key>/images.npy``
that every DataLoader worker (and every DDP rank) opens with ``np.load(mmap_mode="r")``.

The key hashes the preprocessing settings (image size, resize mode, minimum size) and every source file's
relative path, size and modification time: change any of them and a new cache is built (the path
is hashed as bytes, so a file name that is not valid UTF-8 still has a key). The array is written to
a temporary name and renamed, then ``thumbs.npy`` and ``index.json`` (the "complete" marker, written
last) the same way, so an interrupted build never leaves a cache that loads; the next run removes
temporaries whose process is gone (:mod:`lesion_lightning.data.stale`).

For duplicate detection (:mod:`lesion_lightning.data.duplicates`) the same decode also yields each
image's full size, decode scale and a hash of its decoded pixels (``index.json`` ``content``) and a
32x32 thumbnail (``thumbs.npy``): no image is decoded twice.

Image conversions (:func:`load_rgb`): EXIF orientation applied; grayscale ("L", "1") replicated to
RGB; 16-bit / 32-bit grayscale ("I;16", "I") scaled to 8 bits (not clipped); "RGBA" / "LA" / palette
with transparency composited over black (the dermatoscope's dark surround); palette and CMYK
converted with PIL. Truncated or corrupt files, non-images, images smaller than ``min_image_size``
and modes PIL cannot convert are reported as bad rows (``BadItem`` reasons), never as zeros.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lesion_lightning.data.duplicates import THUMB, Content, pixel_digest, thumbnail
from lesion_lightning.data.imageops import RESIZE_MODES, resize_image, to_rgb
from lesion_lightning.data.records import name_bytes, shown
from lesion_lightning.utils.io import tmp_tag

CACHE_VERSION = 2  # 2: per-image pixel digest and thumbnail for duplicate detection
IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"
THUMBS_FILE = "thumbs.npy"


class BadImageError(Exception):
    """An image file that cannot be used (the message is the reason shown to the user)."""


def fingerprint(path: Path, root: Path) -> tuple[str, int, int]:
    """(path relative to root, size in bytes, mtime in ns): changes whenever the file does."""
    st = path.stat()
    return path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns


def cache_key(
    fingerprints: Sequence[tuple[str, int, int]], image_size: int, resize: str, min_image_size: int = 32
) -> str:
    """Directory name of the cache for these source files and settings (bad-image verdicts included)."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, int(image_size), resize, int(min_image_size)]).encode())
    for rel, size, mtime in fingerprints:
        # the name's bytes, not its text: a file name that is not valid UTF-8 still has a key
        h.update(name_bytes(rel) + f"\t{size}\t{mtime}\n".encode())
    return f"s{image_size}_{resize}_{h.hexdigest()[:16]}"


def load_rgb(
    path: str | Path, image_size: int, resize: str = "squash", min_image_size: int = 32
) -> np.ndarray:
    """Decode ``path`` into a ``(S, S, 3)`` uint8 RGB array; raises :class:`BadImageError` with the reason."""
    return decode(path, image_size, resize, min_image_size)[0]


_EXIF_ORIENTATION = 0x0112


def decode(
    path: str | Path, image_size: int, resize: str = "squash", min_image_size: int = 32, content: bool = False
) -> tuple[np.ndarray, Content | None]:
    """:func:`load_rgb`, plus (if ``content``) what duplicate detection needs from the same decode."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if min(w, h) < min_image_size:
                raise BadImageError(f"too small: {w}x{h} px (data.min_image_size={min_image_size})")
            if img.format == "JPEG" and img.mode == "RGB":
                # decode at a reduced DCT scale that is still >= the target: large ISIC JPEGs decode ~8x faster
                img.draft("RGB", (image_size, image_size))
            scale = max(1, round(w / img.size[0]))
            rotated = content and img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
            img.load()
            img = ImageOps.exif_transpose(img)
            img = to_rgb(img)
            out = np.asarray(resize_image(img, image_size, resize), dtype=np.uint8)
            if not content:
                return out, None
            info = Content(
                width=h if rotated else w,
                height=w if rotated else h,
                scale=scale,
                digest=pixel_digest(np.asarray(img)),
            )
            return out, info
    except BadImageError:
        raise
    except UnidentifiedImageError as e:
        raise BadImageError("not an image PIL can read (corrupt or not an image file)") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(
            f"cannot decode ({type(e).__name__}: {e}); the file is probably truncated or corrupt"
        ) from e


@dataclass
class Cache:
    """A complete cache: ``images`` is the memory-mapped array, ``bad`` maps row -> reason,
    ``contents`` each row's :class:`Content` (None for bad rows, or when built without it)."""

    directory: Path
    key: str
    ids: list[str]
    bad: dict[int, str]
    contents: list[Content | None]

    @property
    def images_path(self) -> Path:
        return self.directory / IMAGES_FILE

    def images(self) -> np.ndarray:
        return np.load(self.images_path, mmap_mode="r")

    def thumbs(self) -> np.ndarray:
        """``(N, 32, 32, 3)`` uint8 thumbnails for duplicate detection (zeros for bad rows)."""
        return np.load(self.directory / THUMBS_FILE)


def load_cache(directory: Path, key: str, ids: Sequence[str]) -> Cache | None:
    """The complete cache in ``directory`` if it was built for ``key`` and these ids, else None."""
    try:
        index = json.loads((directory / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return None
    if index.get("key") != key or index.get("version") != CACHE_VERSION or index.get("ids") != list(ids):
        return None
    try:
        arr = np.load(directory / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if arr.shape[0] != len(ids) or arr.dtype != np.uint8:
        return None
    bad = {int(k): v for k, v in index.get("bad", {}).items()}
    stored = index.get("content") or [None] * len(ids)
    contents = [None if c is None else Content(*c) for c in stored]
    return Cache(directory, key, list(ids), bad, contents)


# Module-level so tests can make a build fail half-way (monkeypatch) and check nothing loadable is left.
_decode: Callable[..., tuple[np.ndarray, Content | None]] = decode


def build_cache(
    directory: Path,
    key: str,
    ids: Sequence[str],
    paths: Sequence[Path],
    image_size: int,
    resize: str = "squash",
    min_image_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
    content: bool = True,
) -> Cache:
    """Decode + resize every path into ``directory`` (see the module docstring); returns the loaded cache.

    Threads, not processes: PIL releases the GIL while decoding and resampling, and threads need no
    pickling of the arrays and no fork of a process that may hold CUDA or a W&B run. ``content``:
    record each image's :class:`Content` for duplicate detection (off only to benchmark its cost).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.resize={resize!r} is not one of {list(RESIZE_MODES)}")
    directory.mkdir(parents=True, exist_ok=True)
    tag = tmp_tag()
    tmp_images = directory / f"{IMAGES_FILE}.{tag}.npy"
    tmp_index = directory / f"{INDEX_FILE}.{tag}"
    tmp_thumbs = directory / f"{THUMBS_FILE}.{tag}.npy"
    # Nothing is deleted up front: the key fixes the content, and the final renames (index last) swap a
    # complete cache in atomically, so a node building the same cache concurrently (multi-node DDP on a
    # shared filesystem) never removes one that another node's ranks are already reading.
    n = len(ids)
    arr = np.lib.format.open_memmap(
        tmp_images, mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, 3)
    )
    bad: dict[int, str] = {}
    contents: list[Content | None] = [None] * n
    thumbs = np.zeros((n, THUMB, THUMB, 3), np.uint8)

    def work(i: int) -> tuple[int, np.ndarray | None, Content | None, str | None]:
        try:
            return i, *_decode(paths[i], image_size, resize, min_image_size, content), None
        except BadImageError as e:
            return i, None, None, str(e)

    workers = max(1, workers if workers is not None else min(16, os.cpu_count() or 1))
    try:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n, desc=f"caching {n} images at {image_size}px", disable=not progress or None, unit="img"
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, image, info, reason in pool.map(work, range(n)):
                if image is None:
                    bad[i] = reason or "unreadable"
                else:
                    arr[i] = image
                    if info is not None:
                        contents[i] = info
                        thumbs[i] = thumbnail(image)
                bar.update(1)
        bar.close()
        arr.flush()
        del arr
        os.replace(tmp_images, directory / IMAGES_FILE)
        np.save(tmp_thumbs, thumbs)
        os.replace(tmp_thumbs, directory / THUMBS_FILE)
        index = {
            "version": CACHE_VERSION,
            "key": key,
            "image_size": int(image_size),
            "resize": resize,
            "ids": list(ids),
            "paths": [shown(p) for p in paths],
            "bad": {str(i): r for i, r in sorted(bad.items())},
            # [width, height, decode scale, pixel digest] per row; null if bad
            "content": [None if c is None else [c.width, c.height, c.scale, c.digest] for c in contents],
            "complete": True,
        }
        tmp_index.write_text(json.dumps(index) + "\n")
        os.replace(tmp_index, directory / INDEX_FILE)  # last: only now does the cache load
    finally:
        tmp_images.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)
        tmp_thumbs.unlink(missing_ok=True)
    cache = load_cache(directory, key, ids)
    assert cache is not None, f"cache {directory} did not load right after being built"
    return cache
