"""Uncertainty of the test metrics: one interval type, `Interval`, and one key convention: a value
`<name>` sits beside `<name>_ci` = [low, high] in every results file (`put`).

Percentile-bootstrap 95 % intervals unless an interval names another method.

Per-image metrics (PSNR, SSIM, MSE, bits/dim of each grid) resample the test images with replacement
and recompute the mean; the set metrics (FID, KID, precision / recall) have their own resampling,
without duplicated rows and over both sets (metrics.distribution). One seeded generator per call, so
the same inputs give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
NUM_BOOTSTRAP = 1000
PERCENTILE_BOOTSTRAP = "percentile bootstrap"
NORMAL = "normal approximation (mean ± z·SE)"
CENSORED = "percentile bootstrap (order statistics; ends may be infinite)"


@dataclass(frozen=True)
class Interval:
    """A `level` confidence interval [low, high] and how it was computed."""

    low: float
    high: float
    level: float = CONFIDENCE
    method: str = PERCENTILE_BOOTSTRAP

    def to_json(self) -> list[float]:
        """The `<name>_ci` value: [low, high]."""
        return [float(self.low), float(self.high)]

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def scaled(self, factor: float) -> Interval:
        """The interval of `factor` x the quantity (factor > 0), e.g. bits/dim -> bits per image."""
        return Interval(self.low * factor, self.high * factor, self.level, self.method)

    def describe(self) -> str:
        return f"{self.level:.0%} {self.method}"

    @classmethod
    def percentile(cls, replicates, level: float = CONFIDENCE) -> Interval:
        """The central `level` range of bootstrap replicates (non-finite ones dropped; NaN if none is left)."""
        replicates = np.asarray(replicates, dtype=np.float64)
        replicates = replicates[np.isfinite(replicates)]
        if replicates.size == 0:
            return cls(float("nan"), float("nan"), level)
        tail = (1.0 - level) / 2 * 100
        lo, hi = np.percentile(replicates, [tail, 100 - tail])
        return cls(float(lo), float(hi), level)

    @classmethod
    def censored(cls, replicates, level: float = CONFIDENCE) -> Interval:
        """The central `level` range of replicates that may be -inf / +inf (censored: "below / beyond
        what was measured"); NaN replicates dropped. Order statistics, not interpolation (interpolating
        towards an infinite replicate is meaningless): the low end rounds down, the high end up."""
        replicates = np.asarray(replicates, dtype=np.float64)
        replicates = replicates[~np.isnan(replicates)]
        if replicates.size == 0:
            return cls(float("nan"), float("nan"), level, CENSORED)
        tail = (1.0 - level) / 2
        lo = np.quantile(replicates, tail, method="lower")
        hi = np.quantile(replicates, 1 - tail, method="higher")
        return cls(float(lo), float(hi), level, CENSORED)

    @classmethod
    def normal(cls, values, level: float = CONFIDENCE) -> Interval:
        """mean ± z·SE of per-item values (NaN for fewer than two)."""
        from statistics import NormalDist

        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size < 2:
            return cls(float("nan"), float("nan"), level, NORMAL)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        sem = float(values.std(ddof=1) / math.sqrt(values.size))
        mean = float(values.mean())
        return cls(mean - z * sem, mean + z * sem, level, NORMAL)


def ci_key(name: str) -> str:
    return f"{name}_ci"


def put(section: dict, name: str, value: float | None, interval: Interval | None) -> None:
    """section[name] = value; section[name_ci] = [low, high] (None when no interval was computed)."""
    section[name] = value
    section[ci_key(name)] = interval.to_json() if interval is not None else None


@dataclass(frozen=True)
class Estimate:
    """A per-item mean with its interval and n."""

    value: float
    interval: Interval
    n: int

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.value * factor, self.interval.scaled(factor), self.n)


def per_image_psnr(mse: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """10 log10(data_range^2 / MSE_i) for each image's own mean squared error (inf for a perfect copy)."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The central `confidence` range of bootstrap replicates (`Interval.percentile`)."""
    return Interval.percentile(replicates, confidence)


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
) -> Estimate:
    """Mean of per-item values with its percentile-bootstrap interval.

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
    return Estimate(float(values.mean()), Interval.percentile(means, confidence), int(n))


def with_interval(section: dict, key: str, estimate: Estimate) -> None:
    """section[key] = mean; section[key_ci] = [low, high] (the layout metrics.json uses everywhere)."""
    put(section, key, estimate.value, estimate.interval)
