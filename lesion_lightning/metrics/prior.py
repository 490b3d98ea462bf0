"""How well a prior models code grids, in bits per grid position ("bits/dim").

Two numbers make the prior's figure readable: the PixelCNN's own test bits/dim, and the bits/dim of a
per-position marginal baseline (how often each code appears at each grid position in the train split,
independent of everything else). A prior that does not beat the baseline has learned no structure
beyond "which codes tend to sit where". log2(K) is the uniform, know-nothing bound.

Bits/dim is per grid position, so a 128x128 grid (16x the positions of 32x32) is not comparable to a
32x32 one by it; bits per image = bits/dim x H x W is. Per-grid values feed the bootstrap intervals.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def position_log_probs(
    train_grids: np.ndarray, num_codes: int, alpha: float = 1.0, chunk: int = 1024
) -> np.ndarray:
    """Per-position code log-probabilities (nats) with add-alpha (Laplace for alpha=1) smoothing.

    (N, H, W) integer grids -> (H, W, K) float64; every code gets probability > 0, so a test grid
    holding a code never seen at that position still has a finite cost.
    """
    if alpha <= 0:
        raise ValueError(f"smoothing alpha must be > 0 (add-one smoothing is alpha=1), got {alpha}")
    n, h, w = train_grids.shape
    if n == 0:
        raise ValueError("the train split holds no grids: the marginal baseline needs train data to count")
    positions = h * w
    counts = np.zeros(positions * num_codes, dtype=np.int64)
    offsets = np.arange(positions, dtype=np.int64) * num_codes  # (H*W,) start of each position's K bins
    for lo in range(0, n, chunk):  # chunks keep a memory-mapped 128x128 split from loading at once
        codes = np.asarray(train_grids[lo : lo + chunk], dtype=np.int64).reshape(-1, positions)  # (b, H*W)
        if codes.size and (codes.min() < 0 or codes.max() >= num_codes):
            raise ValueError(
                f"code grid holds indices outside [0, {num_codes}): wrong num_codes for this data"
            )
        counts += np.bincount((codes + offsets).reshape(-1), minlength=positions * num_codes)
    counts = counts.reshape(h, w, num_codes).astype(np.float64)
    return np.log(counts + alpha) - np.log(n + alpha * num_codes)


def marginal_bits_per_grid(
    train_grids: np.ndarray, test_grids: np.ndarray, num_codes: int, alpha: float = 1.0
) -> np.ndarray:
    """(N,) mean -log2 p(code at (i, j)) of each test grid under the train split's per-position frequencies."""
    log_p = position_log_probs(train_grids, num_codes, alpha)  # (H, W, K)
    if test_grids.shape[1:] != log_p.shape[:2]:
        raise ValueError(
            f"test grids {tuple(test_grids.shape[1:])} and train grids {log_p.shape[:2]} differ in size"
        )
    h, w = log_p.shape[:2]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    per_grid = []
    for lo in range(0, len(test_grids), 1024):
        codes = np.asarray(test_grids[lo : lo + 1024], dtype=np.int64)  # (b, H, W)
        per_grid.append(-log_p[rows, cols, codes].reshape(len(codes), -1).mean(1) / math.log(2))
    if not per_grid:
        raise ValueError("the test split holds no grids")
    return np.concatenate(per_grid)


def marginal_bits_per_dim(
    train_grids: np.ndarray, test_grids: np.ndarray, num_codes: int, alpha: float = 1.0
) -> float:
    """Mean -log2 p(code at (i, j)) on test grids under the train split's per-position frequencies."""
    # every grid has H*W positions, so the mean of per-grid means is the mean over all positions
    return float(marginal_bits_per_grid(train_grids, test_grids, num_codes, alpha).mean())


@torch.no_grad()
def model_bits_per_grid(
    model: torch.nn.Module, dataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> np.ndarray:
    """(N,) mean cross-entropy over each grid's positions, in bits (bits/dim of each grid).

    `model(indices (B, H, W), labels (B,)) -> logits (B, K, H, W)` (PixelCNNModule's forward). All grids
    have H*W positions, so the mean of this array is the exact bits/dim over the whole split and
    times H*W it is bits per image.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    per_grid = []
    for batch in loader:
        indices = batch["indices"].to(device)
        logits = model(indices, batch["label"].to(device))
        # (B, K, H, W) logits straight into cross-entropy, in float32, summed per grid in float64
        nats = F.cross_entropy(logits.float(), indices, reduction="none")  # (B, H, W)
        per_grid.append((nats.flatten(1).double().mean(1) / math.log(2)).cpu().numpy())
    if not per_grid:
        raise ValueError("no grids to evaluate")
    return np.concatenate(per_grid)


def model_bits_per_dim(
    model: torch.nn.Module, dataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> float:
    """Exact mean cross-entropy over every grid position of `dataset`, in bits."""
    return float(model_bits_per_grid(model, dataset, batch_size, device, num_workers).mean())


def choose_smoothing(
    train_grids: np.ndarray, val_grids: np.ndarray, num_codes: int, alphas
) -> tuple[float, dict[float, float]]:
    """The add-alpha of `alphas` whose per-position marginal has the lowest mean bits/dim on `val_grids`.

    alpha = 1 (Laplace) gives every unseen code at a position the weight of one observation, which with
    K codes and N train grids moves about log2(1 + K/N) bits per position to unseen codes; chosen on
    held-out codes, the baseline is the strongest of its family, so beating it means something.
    Returns (best alpha, {alpha: val bits/dim}); ties go to the smaller alpha.
    """
    alphas = sorted(float(a) for a in alphas)
    if not alphas:
        raise ValueError("eval.marginal_smoothing_grid is empty: give at least one alpha > 0")
    scores = {a: marginal_bits_per_dim(train_grids, val_grids, num_codes, a) for a in alphas}
    best = min(alphas, key=lambda a: (scores[a], a))
    return best, scores
