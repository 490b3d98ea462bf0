"""Exact and near-duplicate images, found while the cache is built and grouped before the split.

ISIC releases hold the same photograph more than once (Cassidy et al. 2022, Medical Image Analysis
75:102305: duplicates within and between the 2016-2020 releases, across their training and test
sets; Abhishek et al. 2025, Scientific Data 12:196: duplicates and train/test leakage in HAM10000
and DermaMNIST). ``lesion_id`` / ``patient_id`` grouping cannot catch a copy filed under another id,
so two more groupings join images into one split group:

``exact``  the decoded pixels are identical (a hash of the pixels, not of the file bytes: a PNG
           re-save of a JPEG's pixels counts). Each image's pixels are hashed as the cache build
           decodes them (:func:`content_of`). Large JPEGs are decoded at a reduced DCT scale there, so
           a drafted JPEG and a full-size PNG of the same pixels hash differently; images of the same
           full size whose thumbnails are nearly equal (``EXACT_CANDIDATE``) are then decoded once more
           in full and compared (rare, so cheap).
``near``   ``1 - correlation`` of small thumbnails is at most ``data.near_duplicate_threshold``:
           re-encodes at another JPEG quality, small crops and resizes. The descriptor is the central
           70 % of the image box-averaged to 8x8 RGB (the dermatoscope's dark surround, common to
           every image, left out), mean-centred and normalised; a pair's distance is the smallest
           over 27 alignments of one image (zoom 96-100 %, shift -1..1 % each way), so a 2 % crop
           still lines up. Candidates come from a k-d tree over 16 principal directions of the
           descriptors (within their lowest DCT frequencies): an orthonormal projection never
           increases a distance, so a radius query there misses no pair, and there is no all-pairs loop. The build stores a 32x32 thumbnail
           per image (``thumbs.npy``) to compute them from.

Near-duplicate links are transitive (single linkage), like lesion and patient groups.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash
from PIL import Image, ImageDraw, ImageOps

from lesion_lightning.data.imageops import to_rgb
from lesion_lightning.data.records import shown
from lesion_lightning.utils.io import atomic_write

DUPLICATE_MODES: tuple[str, ...] = ("group", "drop", "keep")
REPORT_FILE = "duplicates.csv"
PICTURE_FILE = "duplicates.png"
THUMB = 32  # side of the stored thumbnails
GRID = 8  # descriptor: GRID x GRID x RGB
REGION = 0.70  # central share of the image the descriptor looks at
ZOOMS = (0.96, 0.98, 1.0)
SHIFTS = (-0.01, 0.0, 0.01)
# descriptor distance below which two images of the same full size are decoded in full and compared
# pixel by pixel (a JPEG decoded at a reduced scale and a PNG of its full-size pixels differ slightly)
EXACT_CANDIDATE = 0.002
PROJECTED_DIMS = 16


def pixel_digest(pixels: np.ndarray) -> str:
    """Hash of decoded pixels and their shape (128-bit xxh3: fast enough to ride on every decode)."""
    h = xxhash.xxh3_128(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The ``(THUMB, THUMB, 3)`` uint8 box-averaged thumbnail stored per image."""
    return np.asarray(Image.fromarray(image).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.uint8)


@dataclass(frozen=True)
class Content:
    """What the cache build learns about one image's pixels (``scale`` > 1: decoded at 1/scale)."""

    width: int
    height: int
    scale: int
    digest: str


def full_digest(path: str | Path) -> str:
    """Digest of ``path`` decoded at full size (what the build hashes when nothing is drafted)."""
    with Image.open(path) as img:
        img.load()
        return pixel_digest(np.asarray(to_rgb(ImageOps.exif_transpose(img))))


def _box_weights(start: float, stop: float) -> np.ndarray:
    """``(GRID, THUMB)``: each output cell the mean of the source pixels it covers (fractional edges)."""
    edges = np.linspace(start, stop, GRID + 1)
    src = np.arange(THUMB)
    lo = np.maximum(edges[:-1, None], src[None, :])
    hi = np.minimum(edges[1:, None], src[None, :] + 1)
    w = np.clip(hi - lo, 0, None)
    return w / w.sum(axis=1, keepdims=True)


def _alignments() -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for zoom in ZOOMS:
        half = THUMB * REGION * zoom / 2
        for dy in SHIFTS:
            for dx in SHIFTS:
                cy, cx = THUMB / 2 + dy * THUMB, THUMB / 2 + dx * THUMB
                out.append((_box_weights(cy - half, cy + half), _box_weights(cx - half, cx + half)))
    return out


_ALIGNMENTS = _alignments()
_BASE = _ALIGNMENTS[len(_ALIGNMENTS) - 1 - (len(SHIFTS) ** 2) // 2]  # zoom 1.0, no shift


def _low_frequency_basis(count: int = 16) -> np.ndarray:
    """``(GRID*GRID*3, 3*count)``: the ``count`` lowest 2-D DCT frequencies of each colour channel."""
    k = np.arange(GRID)
    dct = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * GRID)) * np.sqrt(2.0 / GRID)
    dct[0] /= np.sqrt(2.0)
    freqs = sorted(((u, v) for u in range(GRID) for v in range(GRID)), key=lambda f: (f[0] + f[1], f[0]))
    columns = []
    for u, v in freqs[:count]:
        for c in range(3):
            col = np.zeros((GRID, GRID, 3))
            col[:, :, c] = np.outer(dct[u], dct[v])
            columns.append(col.ravel())
    return np.stack(columns, axis=1)


_LOW = _low_frequency_basis()


def principal_projection(base: np.ndarray, dims: int = PROJECTED_DIMS, sample: int = 20000) -> np.ndarray:
    """``(D, dims)`` orthonormal columns: the principal directions of the descriptors' low frequencies.

    Orthonormal, so a projected distance never exceeds the true one: the radius query in
    :func:`near_pairs` misses no pair. Principal, so few dimensions keep most of what tells
    photographs apart and the query returns few candidates to check. Fitted within the 48 lowest
    DCT frequencies: a 48x48 eigenproblem, which stays fast even on a busy machine.
    """
    low = base[:: max(1, len(base) // sample)].astype(np.float64) @ _LOW
    low -= low.mean(axis=0)
    _, vectors = np.linalg.eigh(low.T @ low)  # ascending eigenvalues
    return np.ascontiguousarray(_LOW @ vectors[:, ::-1][:, :dims]).astype(np.float32)


def descriptors(thumbs: np.ndarray, alignment: tuple[np.ndarray, np.ndarray] = _BASE) -> np.ndarray:
    """``(N, GRID*GRID*3)`` float32 unit vectors, mean-centred, of ``(N, THUMB, THUMB, 3)`` thumbnails."""
    wr, wc = (w.astype(np.float32) for w in alignment)
    n, h, w, c = thumbs.shape
    rows = np.matmul(wr, np.asarray(thumbs, dtype=np.float32).reshape(n, h, w * c))  # (n, GRID, w * c)
    cells = np.matmul(rows.reshape(n, GRID, w, c).transpose(0, 1, 3, 2), wc.T)  # (n, GRID, c, GRID)
    d = np.ascontiguousarray(cells.transpose(0, 1, 3, 2)).reshape(n, -1)
    d -= d.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    return d / np.maximum(norm, 1e-6)  # a flat image: a zero vector, near nothing but other flat ones


def near_pairs(thumbs: np.ndarray, threshold: float, chunk: int = 4096) -> dict[tuple[int, int], float]:
    """``{(i, j): distance}`` for every ``i < j`` whose aligned distance is at most ``threshold``."""
    from scipy.spatial import cKDTree

    n = len(thumbs)
    if n < 2 or threshold < 0:
        return {}
    thumbs = np.asarray(thumbs, dtype=np.float32)  # converted once, not once per alignment
    base = descriptors(thumbs)
    proj = principal_projection(base)
    tree = cKDTree(base @ proj)
    radius = float(np.sqrt(2.0 * threshold)) + 1e-6  # |a - b|^2 = 2 (1 - a.b) for unit vectors
    best: dict[int, float] = {}  # i * n + j (i < j) -> smallest distance over the alignments
    for alignment in _ALIGNMENTS:
        for lo in range(0, n, chunk):
            moved = descriptors(thumbs[lo : lo + chunk], alignment)
            # tree against tree: every (moved, base) pair within the radius, as arrays
            close = cKDTree(moved @ proj).sparse_distance_matrix(tree, radius, output_type="ndarray")
            rows, cols = close["i"].astype(np.int64), close["j"].astype(np.int64)
            dist = 1.0 - np.einsum("ij,ij->i", moved[rows], base[cols])
            i = rows + lo
            keep = (i != cols) & (dist <= threshold)
            a, b = np.minimum(i[keep], cols[keep]), np.maximum(i[keep], cols[keep])
            for key, d in zip((a * n + b).tolist(), dist[keep].tolist(), strict=True):
                if d < best.get(key, 3.0):
                    best[key] = d
    return {(key // n, key % n): d for key, d in best.items()}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


@dataclass
class Duplicates:
    """Groups of duplicate images (row indices), and the links that joined them."""

    groups: list[list[int]] = field(default_factory=list)
    # (i, j) -> ("exact" | "near", descriptor distance)
    links: dict[tuple[int, int], tuple[str, float]] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(len(g) for g in self.groups)

    def pairs(self) -> list[tuple[int, int]]:
        """Every image joined to its group's first image (enough to union the groups elsewhere)."""
        return [(g[0], j) for g in self.groups for j in g[1:]]

    def kinds(self, n: int) -> list[tuple[int, int, str]]:
        """(group, row, "first" | "exact" | "near"): exact = the same pixels as the group's first image."""
        exact = _UnionFind(n)
        for (i, j), (kind, _) in self.links.items():
            if kind == "exact":
                exact.union(i, j)
        rows = []
        for g, members in enumerate(self.groups):
            rows.append((g, members[0], "first"))
            rows += [
                (g, i, "exact" if exact.find(i) == exact.find(members[0]) else "near") for i in members[1:]
            ]
        return rows


def find_duplicates(
    contents: Sequence[Content | None],
    thumbs: np.ndarray,
    paths: Sequence[Path],
    near_threshold: float | None,
) -> Duplicates:
    """Exact and (if ``near_threshold`` is not None) near-duplicate groups among the readable images.

    ``contents[i]`` is None for an image that could not be read: it joins no group.
    """
    ok = [i for i, c in enumerate(contents) if c is not None]
    uf = _UnionFind(len(contents))
    links: dict[tuple[int, int], tuple[str, float]] = {}

    first: dict[tuple[int, int, int, str], int] = {}
    for i in ok:  # equal decoded pixels at the same decode scale
        c = contents[i]
        j = first.setdefault((c.width, c.height, c.scale, c.digest), i)
        if j != i:
            uf.union(j, i)
            links[(j, i)] = ("exact", 0.0)

    radius = max(EXACT_CANDIDATE, near_threshold if near_threshold is not None else -1.0)
    close = near_pairs(np.asarray(thumbs)[ok], radius) if ok else {}
    full: dict[int, str] = {}

    def digest_at_full_size(i: int) -> str:
        if i not in full:
            full[i] = contents[i].digest if contents[i].scale == 1 else full_digest(paths[i])
        return full[i]

    for (a, b), dist in sorted(close.items(), key=lambda kv: (kv[1], kv[0])):
        i, j = ok[a], ok[b]
        if uf.find(i) == uf.find(j):
            continue
        x, y = contents[i], contents[j]
        if dist <= EXACT_CANDIDATE and (x.width, x.height) == (y.width, y.height) and x.scale != y.scale:
            try:  # one decoded at a reduced JPEG scale: compare the full-size pixels
                if digest_at_full_size(i) == digest_at_full_size(j):
                    uf.union(i, j)
                    links[(i, j)] = ("exact", dist)
                    continue
            except OSError:
                pass  # readable when cached, gone now: the next cache build reports it
        if near_threshold is not None and dist <= near_threshold:
            uf.union(i, j)
            links[(i, j)] = ("near", dist)

    members: dict[int, list[int]] = defaultdict(list)
    for i in ok:
        members[uf.find(i)].append(i)
    groups = sorted((sorted(g) for g in members.values() if len(g) > 1), key=lambda g: g[0])
    return Duplicates(groups, links)


def write_report(
    path: Path,
    dups: Duplicates,
    thumbs: np.ndarray,
    ids: Sequence[str],
    paths: Sequence[Path],
    split_of: dict[str, str],
    dropped: set[int],
) -> None:
    """``duplicates.csv``: one row per image in a group (written to a temporary name, then renamed).

    ``distance``: ``1 - correlation`` to the group's first image (aligned, see the module docstring).
    """
    rows = dups.kinds(len(ids))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.writer(f)
            writer.writerow(["group", "id", "path", "kind", "distance", "split"])
            for g, i, kind in rows:
                head = dups.groups[g][0]
                dist = 0.0 if i == head else pair_distance(thumbs[head], thumbs[i])
                split = "dropped" if i in dropped else split_of.get(ids[i], "")
                writer.writerow([g, ids[i], shown(paths[i]), kind, f"{dist:.4f}", split])

    atomic_write(path, write)


def pair_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The aligned distance between two thumbnails (the smallest over the alignments, both ways)."""
    pair = np.stack([a, b])
    base = descriptors(pair)
    best = 2.0
    for alignment in _ALIGNMENTS:
        moved = descriptors(pair, alignment)
        best = min(best, float(1 - moved[0] @ base[1]), float(1 - moved[1] @ base[0]))
    return max(best, 0.0)


def write_picture(
    path: Path, dups: Duplicates, ids: Sequence[str], images: np.ndarray, max_pairs: int = 8
) -> bool:
    """A few near-duplicate pairs side by side, the most distant first (the ones that judge the threshold)."""
    near = sorted(
        ((dist, i, j) for (i, j), (kind, dist) in dups.links.items() if kind == "near"),
        key=lambda t: (-t[0], t[1], t[2]),
    )[:max_pairs]
    if not near:
        path.unlink(missing_ok=True)
        return False
    side, caption = max(128, int(images.shape[1])), 14
    sheet = Image.new("RGB", (2 * side + 8, len(near) * (side + caption + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (dist, i, j) in enumerate(near):
        top = k * (side + caption + 6)
        draw.text((2, top), f"distance {dist:.4f}: {ids[i][:28]} | {ids[j][:28]}", fill=(0, 0, 0))
        for col, row in enumerate((i, j)):
            tile = Image.fromarray(np.asarray(images[row])).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(tile, (col * (side + 8), top + caption))
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return True
