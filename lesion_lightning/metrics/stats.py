"""Uncertainty of the test metrics: percentile-bootstrap 95 % intervals.

Per-image metrics (PSNR, SSIM, MSE, bits/dim of each grid) resample the test images with replacement
and recompute the mean; set metrics (FID, KID) resample the generated set with replacement and
recompute the distance to the fixed real set (see metrics.generation.fid_kid_intervals). One seeded
generator per call, so the same inputs give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONFIDENCE = 0.95
NUM_BOOTSTRAP = 1000


def per_image_psnr(mse: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """10 log10(data_range^2 / MSE_i) for each image's own mean squared error (inf for a perfect copy)."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` range of bootstrap replicates."""
    replicates = np.asarray(replicates, dtype=np.float64)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return (float(lo), float(hi))


def bootstrap_replicates(
    n: int, statistic: Callable[[np.ndarray], float], num: int = NUM_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """`statistic(rows)` for `num` resamples (with replacement) of range(n)."""
    if n < 1:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, n, size=n)) for _ in range(num)], dtype=np.float64)


def mean_interval(
    values, num: int = NUM_BOOTSTRAP, seed: int = 0, confidence: float = CONFIDENCE
) -> dict[str, float | int]:
    """Mean of per-item values with its percentile-bootstrap interval: {mean, ci_low, ci_high, n}.

    Vectorised: the `num` resampled means come from one (num, n) index draw in chunks.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0:
        raise ValueError("no values to average")
    rng = np.random.default_rng(seed)
    means = np.empty(num)
    chunk = max(1, 2**22 // n)
    for lo in range(0, num, chunk):
        rows = rng.integers(0, n, size=(min(chunk, num - lo), n))
        means[lo : lo + len(rows)] = values[rows].mean(axis=1)
    low, high = percentile_interval(means, confidence)
    return {"mean": float(values.mean()), "ci_low": low, "ci_high": high, "n": int(n)}


def with_interval(section: dict, key: str, interval: dict) -> None:
    """section[key] = mean; section[key_ci] = [low, high] (the layout metrics.json uses everywhere)."""
    section[key] = interval["mean"]
    section[f"{key}_ci"] = [interval["ci_low"], interval["ci_high"]]


def censored_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` range of replicates that may be -inf / +inf (censored: "below / beyond
    what was measured"); NaN replicates are dropped. Order statistics, not interpolation (interpolating
    towards an infinite replicate is meaningless): the lower end rounds down, the upper end up, so the
    range is never narrower than `percentile_interval`'s on finite replicates."""
    replicates = np.asarray(replicates, dtype=np.float64)
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2
    lo = np.quantile(replicates, tail, method="lower")
    hi = np.quantile(replicates, 1 - tail, method="higher")
    return (float(lo), float(hi))
