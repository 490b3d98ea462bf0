"""Generated-vs-real set metrics on one feature space, with both sample sizes and intervals that mean
what they say. No replicate ever holds a duplicated row (copies shrink FID's covariance estimate and
count a sample paired with itself in KID), and both sets vary in every replicate (the real side is a
sample too).

- `fid`: the Frechet distance between Gaussian fits of the two full feature sets, in float64
  (== torchmetrics' FrechetInceptionDistance). `fid_ci`: fid +- z * SE, SE from random *disjoint
  half-splits* of both sets (SE^2 = mean over splits of (FID(half 1) - FID(half 2))^2 / 4, since the
  variance of a root-n statistic doubles at half the size). This is the sampling interval of FID *at
  these set sizes*: FID is biased upwards at small n, so it does not cover the population distance.
- `fid_inf` (Chong & Forsyth 2020, "FID-infinity", extended to both sides): FID on subsets without
  replacement of both sets at fractions f of their sizes, fitted as a + b / f (the bias of FID falls
  like 1 / n on each side) and extrapolated to f -> infinity: `fid_inf` = a. `fid_inf_ci`: fid_inf
  +- z * SE from the same half-splits (each half gets its own extrapolation). This one estimates the
  population distance and is simulation-tested to cover it.
- `kid`: the unbiased MMD^2 with the cubic kernel k(x, y) = (x.y / F + 1)^3 over the full sets.
  `kid_ci`: percentile bootstrap resampling *both* sets, each replicate the unbiased estimator with
  duplicate pairs excluded: gen term (c'Kc - sum c_i^2 K_ii) / (N^2 - sum c_i^2) for counts c (and the
  same for the real term), so a copy of a sample is never scored against itself. `kid_mean` /
  `kid_std`: torchmetrics' mean / std over random subsets, as published KIDs report it.
- `precision` / `recall` (Kynkaanniemi et al. 2019, k nearest neighbours, torch-fidelity): on *equal-size*
  sets (the k-NN radii depend on set size), the larger side subsampled without replacement to the
  smaller one's size, repeated `prc_repeats` times; the mean, and `_ci` = mean +- z * sqrt(between-
  repeat variance + binomial variance p(1-p)/m), clipped to [0, 1] (approximate: the binomial term
  treats the k-NN balls as fixed).

`reliable` = min(n_generated, n_real) >= RELIABLE_N (2,048, the Inception feature size) on Inception
features; a stand-in extractor is never reliable (see metrics.naming).
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import torch

from lesion_lightning.metrics.generation import GenerationUnavailable
from lesion_lightning.metrics.stats import CONFIDENCE, Interval

# below this many images on either side an FID/KID is reported as unreliable (the Inception feature size)
RELIABLE_N = 2048
# per-class rows need this many real images of the class (a 2048-d covariance from a handful is noise)
MIN_CLASS_REAL = 50
# FID-infinity: subset fractions of both sets, subsets per fraction (the full sets are the f = 1 point)
FID_INF_FRACTIONS = (0.5, 0.625, 0.75, 0.875)
FID_INF_REPEATS = 2
# fewer rows than this per side in the smallest subset of a half-split: no FID-infinity
FID_INF_MIN_ROWS = 4


def _z(confidence: float = CONFIDENCE) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _cov_factor(x: torch.Tensor) -> torch.Tensor:
    """(n, F) rows -> B with B^T B = their covariance (1 / (n - 1)); B is (min(n, F), F)."""
    n, dims = x.shape
    xc = (x - x.mean(0)) / math.sqrt(n - 1)
    return torch.linalg.qr(xc, mode="r")[1] if n > dims else xc


def _double_center(block: torch.Tensor) -> torch.Tensor:
    return block - block.mean(0, keepdim=True) - block.mean(1, keepdim=True) + block.mean()


def _sqrt_eig_sum(gram: torch.Tensor) -> torch.Tensor:
    """sum sqrt(eig(gram)) of a PSD matrix (round-off negatives clamped)."""
    return torch.linalg.eigvalsh((gram + gram.T) / 2).clamp(min=0).sqrt().sum()


class FrechetSets:
    """The Frechet distance between any row subsets of two fixed feature sets, in float64.

    FID = ||mu_r - mu_g||^2 + tr S_r + tr S_g - 2 tr (S_r S_g)^(1/2), where tr (S_r S_g)^(1/2) is the
    sum of singular values of A_r A_g^T (A: centred rows / sqrt(n - 1)): the eigenvalues of S_r S_g are
    their squares, so a rank-deficient covariance (n < F) needs no regularising offset.
    With fewer rows than features on one side (the usual case at 2048-d), every term is read off the
    linear Gram matrices X_r X_r^T, X_g X_g^T, X_r X_g^T computed once: a subset's A_r A_g^T is the
    double-centred block of X_r X_g^T, so a replicate costs min(n_r, n_g)^2 max(n_r, n_g), not F.
    Otherwise (both sides larger than F) it works on QR factors of the centred features.
    """

    def __init__(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.real, self.fake = real.double(), fake.double()
        self.gram = min(len(real), len(fake)) <= real.shape[1]
        if self.gram:
            self.k_rr = self.real @ self.real.T
            self.k_gg = self.fake @ self.fake.T
            self.k_rg = self.real @ self.fake.T

    def __call__(self, rows_r: torch.Tensor | None = None, rows_g: torch.Tensor | None = None) -> float:
        n_r = len(self.real) if rows_r is None else len(rows_r)
        n_g = len(self.fake) if rows_g is None else len(rows_g)
        if min(n_r, n_g) < 2:
            raise GenerationUnavailable(
                f"FID needs at least 2 real and 2 generated images, got {n_r} real and {n_g} generated"
            )
        if not self.gram:
            real = self.real if rows_r is None else self.real[rows_r]
            fake = self.fake if rows_g is None else self.fake[rows_g]
            b_r, b_g = _cov_factor(real), _cov_factor(fake)
            cross = torch.linalg.svdvals(b_r @ b_g.T).sum()
            mean_term = (real.mean(0) - fake.mean(0)).square().sum()
            return float(mean_term + b_r.square().sum() + b_g.square().sum() - 2 * cross)
        k_rr = self.k_rr if rows_r is None else self.k_rr[rows_r][:, rows_r]
        k_gg = self.k_gg if rows_g is None else self.k_gg[rows_g][:, rows_g]
        k_rg = self.k_rg
        if rows_r is not None:
            k_rg = k_rg[rows_r]
        if rows_g is not None:
            k_rg = k_rg[:, rows_g]
        mean_term = k_rr.mean() + k_gg.mean() - 2 * k_rg.mean()
        trace_r = (k_rr.trace() - k_rr.sum() / n_r) / (n_r - 1)
        trace_g = (k_gg.trace() - k_gg.sum() / n_g) / (n_g - 1)
        m = _double_center(k_rg)  # (n_r, n_g) = A_r A_g^T * sqrt((n_r - 1)(n_g - 1))
        inner = m @ m.T if n_r <= n_g else m.T @ m
        cross = _sqrt_eig_sum(inner) / math.sqrt((n_r - 1) * (n_g - 1))
        return float(mean_term + trace_r + trace_g - 2 * cross)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID of two feature sets (FrechetSets on the full sets)."""
    return FrechetSets(real, fake)()


def _take(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """m of range(n) without replacement."""
    return torch.randperm(n, generator=gen)[:m]


def fid_infinity(
    sets: FrechetSets, rows_r: torch.Tensor, rows_g: torch.Tensor, gen: torch.Generator
) -> dict[str, float]:
    """Chong & Forsyth's extrapolation on both sides: FID(f) = a + b / f over subsets of fraction f
    of the rows `rows_r` / `rows_g`."""
    n_r, n_g = len(rows_r), len(rows_g)
    device = sets.real.device
    inv_f, values = [1.0], [sets(rows_r.to(device), rows_g.to(device))]
    for frac in FID_INF_FRACTIONS:
        m_r, m_g = max(2, round(frac * n_r)), max(2, round(frac * n_g))
        for _ in range(FID_INF_REPEATS):
            sub_r, sub_g = rows_r[_take(n_r, m_r, gen)], rows_g[_take(n_g, m_g, gen)]
            inv_f.append(1.0 / frac)
            values.append(sets(sub_r.to(device), sub_g.to(device)))
    slope, intercept = np.polyfit(np.array(inv_f), np.array(values), 1)
    return {"fid_inf": float(intercept), "fid_inf_slope": float(slope), "fid_full": values[0]}


def _normal(estimate: float, se: float, confidence: float, over: str) -> list[float]:
    z = _z(confidence)
    return Interval(
        estimate - z * se, estimate + z * se, confidence, f"normal approximation, SE from {over}"
    ).to_json()


def frechet_intervals(
    real: torch.Tensor,
    fake: torch.Tensor,
    num_splits: int = 10,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict:
    """`fid`, `fid_ci`, `fid_inf`, `fid_inf_ci` (see the module doc); no resample repeats a row."""
    gen = torch.Generator().manual_seed(seed)
    n_r, n_g = len(real), len(fake)
    sets = FrechetSets(real, fake)
    all_r, all_g = torch.arange(n_r), torch.arange(n_g)
    with_inf = min(n_r, n_g) // 2 * FID_INF_FRACTIONS[0] >= FID_INF_MIN_ROWS

    def one(rows_r: torch.Tensor, rows_g: torch.Tensor) -> dict[str, float]:
        if with_inf:
            return fid_infinity(sets, rows_r, rows_g, gen)
        return {"fid_full": sets(rows_r.to(real.device), rows_g.to(real.device))}

    full = one(all_r, all_g)
    out: dict = {"fid": full["fid_full"], "fid_ci": None, "fid_splits": num_splits}
    if with_inf:
        out.update({"fid_inf": full["fid_inf"], "fid_inf_slope": full["fid_inf_slope"], "fid_inf_ci": None})
    else:
        out["fid_inf_skipped"] = (
            f"FID-infinity needs >= {int(FID_INF_MIN_ROWS / FID_INF_FRACTIONS[0] * 2)} images per side "
            f"(got {n_r} real, {n_g} generated)"
        )
    if num_splits < 2 or min(n_r, n_g) < 4:
        out["fid_ci_skipped"] = (
            f"half-split intervals need >= 4 images per side and >= 2 splits (eval.fid_splits={num_splits})"
        )
        return out
    diffs, diffs_inf = [], []
    for _ in range(num_splits):
        perm_r, perm_g = torch.randperm(n_r, generator=gen), torch.randperm(n_g, generator=gen)
        first = one(perm_r[: n_r // 2], perm_g[: n_g // 2])
        second = one(perm_r[n_r // 2 :], perm_g[n_g // 2 :])
        diffs.append(first["fid_full"] - second["fid_full"])
        if with_inf:
            diffs_inf.append(first["fid_inf"] - second["fid_inf"])
    over = f"{num_splits} random disjoint half-splits of both sets"
    se = math.sqrt(float(np.mean(np.square(diffs))) / 4)
    out.update({"fid_se": se, "fid_ci": _normal(out["fid"], se, confidence, over)})
    if with_inf:
        se_inf = math.sqrt(float(np.mean(np.square(diffs_inf))) / 4)
        out.update({"fid_inf_se": se_inf, "fid_inf_ci": _normal(out["fid_inf"], se_inf, confidence, over)})
    return out


def _cubic_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


class KernelBootstrap:
    """Unbiased MMD^2 (KID's estimator) of resamples of *both* sets, duplicate pairs excluded.

    A resample is a pair of count vectors (c_g, c_r): how often each row is drawn. Pairs of positions
    holding the same original row are left out of the within-set terms, so
    gen term = (c'Kc - sum c_i^2 K_ii) / (N^2 - sum c_i^2): the mean kernel over pairs of *distinct*
    rows, each pair weighted by how often it was drawn. For all-ones counts this is the plain
    unbiased estimator.
    """

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, device: torch.device | str = "cpu") -> None:
        real, fake = real.double().to(device), fake.double().to(device)
        self.k_rr, self.k_gg, self.k_gr = (
            _cubic_kernel(real, real),
            _cubic_kernel(fake, fake),
            _cubic_kernel(fake, real),
        )
        self.n, self.m = fake.shape[0], real.shape[0]

    @staticmethod
    def _within(kernel: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, n) counts -> (B,) mean kernel over pairs of distinct rows."""
        c2 = c.square()
        pairs = c.sum(1).square() - c2.sum(1)
        return (((c @ kernel) * c).sum(1) - c2 @ kernel.diagonal()) / pairs

    def __call__(
        self, counts_g: torch.Tensor | None = None, counts_r: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, n) and (B, m) counts (None: the observed sets, all ones) -> (B,) MMD^2 estimates."""
        device = self.k_gg.device
        c_g = torch.ones(1, self.n, dtype=torch.float64, device=device) if counts_g is None else counts_g
        c_r = torch.ones(1, self.m, dtype=torch.float64, device=device) if counts_r is None else counts_r
        cross = ((c_g @ self.k_gr) * c_r).sum(1) / (c_g.sum(1) * c_r.sum(1))
        return self._within(self.k_gg, c_g) + self._within(self.k_rr, c_r) - 2 * cross


def _counts(n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, n) counts of a with-replacement resample of range(n) per row."""
    rows = torch.randint(0, n, (batch, n), generator=gen)
    return torch.zeros(batch, n, dtype=torch.float64).scatter_add_(
        1, rows, torch.ones(batch, n, dtype=torch.float64)
    )


def kid_interval(
    real: torch.Tensor,
    fake: torch.Tensor,
    num_bootstrap: int = 200,
    seed: int = 0,
    device: torch.device | str = "cpu",
    confidence: float = CONFIDENCE,
) -> dict:
    """`kid` (unbiased, full sets) and its percentile-bootstrap `kid_ci` over resamples of both sets."""
    if min(len(real), len(fake)) < 2:
        raise GenerationUnavailable(
            f"KID needs at least 2 real and 2 generated images, got {len(real)} real and {len(fake)} generated"
        )
    kernel = KernelBootstrap(real, fake, device)
    out: dict = {"kid": float(kernel()[0]), "kid_ci": None, "kid_bootstrap": num_bootstrap}
    gen = torch.Generator().manual_seed(seed)
    reps = []
    for lo in range(0, num_bootstrap, 50):
        b = min(50, num_bootstrap - lo)
        c_g, c_r = (
            _counts(kernel.n, b, gen).to(kernel.k_gg.device),
            _counts(kernel.m, b, gen).to(kernel.k_gg.device),
        )
        reps.append(kernel(c_g, c_r).cpu())
    if reps:
        out["kid_ci"] = Interval.percentile(torch.cat(reps).numpy(), confidence).to_json()
    return out


def kid_subset_stats(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, seed: int
) -> dict:
    """torchmetrics' KID mean / std over `subsets` random subsets (its published-KID convention)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from lesion_lightning.metrics.generation import _Precomputed

    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    kid.update(real.double().cpu(), real=True)
    kid.update(fake.double().cpu(), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return {"kid_mean": float(mean), "kid_std": float(std), "kid_subset_size": size}


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Kynkaenniemi et al.'s precision (fidelity) and recall (diversity), by torch-fidelity, as given."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    if min(len(real), len(fake)) <= k:
        raise GenerationUnavailable(
            f"precision/recall with k={k} need more than {k} real and generated images, got "
            f"{len(real)} real and {len(fake)} generated"
        )
    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, verbose=False)
    return {"precision": float(out["precision"]), "recall": float(out["recall"]), "prc_k": k}


def precision_recall_equal_n(
    real: torch.Tensor,
    fake: torch.Tensor,
    k: int = 3,
    repeats: int = 10,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict:
    """Precision / recall on equal-size sets: the larger side subsampled (no replacement) to the smaller."""
    m = min(len(real), len(fake))
    if m <= k:
        raise GenerationUnavailable(
            f"precision/recall with k={k} need more than {k} real and generated images, got "
            f"{len(real)} real and {len(fake)} generated"
        )
    equal = len(real) == len(fake)
    repeats = 1 if equal else max(1, repeats)
    gen = torch.Generator().manual_seed(seed)
    values: dict[str, list[float]] = {"precision": [], "recall": []}
    for _ in range(repeats):
        r = real if len(real) == m else real[_take(len(real), m, gen).to(real.device)]
        f = fake if len(fake) == m else fake[_take(len(fake), m, gen).to(fake.device)]
        one = precision_recall(r, f, k)
        values["precision"].append(one["precision"])
        values["recall"].append(one["recall"])
    out: dict = {"prc_k": k, "prc_n": m, "prc_repeats": repeats}
    z = _z(confidence)
    for name, vals in values.items():
        p = float(np.mean(vals))
        between = float(np.var(vals, ddof=1)) if len(vals) > 1 else 0.0
        se = math.sqrt(between + p * (1 - p) / m)
        out[name] = p
        out[f"{name}_ci"] = Interval(
            max(0.0, p - z * se), min(1.0, p + z * se), confidence, "normal approximation, clipped to [0, 1]"
        ).to_json()
    return out


def set_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    feature_extractor: str | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    num_bootstrap: int = 200,
    fid_splits: int = 10,
    prc_k: int = 3,
    prc_repeats: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """FID (+ FID-infinity), KID, precision / recall with n on both sides, intervals and `reliable`.

    `feature_extractor`: the extractor's name (metrics.naming); None or a stand-in is never reliable.
    """
    from lesion_lightning.metrics.naming import is_inception

    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dims, generated ones {fake.shape[1]}")
    n, m = len(fake), len(real)
    real_d, fake_d = real.double().to(device), fake.double().to(device)
    out: dict = {"n_generated": n, "n_real": m, "num_features": int(real.shape[1])}
    out.update(frechet_intervals(real_d, fake_d, fid_splits, seed))
    out.update(kid_interval(real_d, fake_d, num_bootstrap, seed, device))
    out.update(kid_subset_stats(real, fake, kid_subset_size, kid_subsets, seed))
    inception = feature_extractor is not None and is_inception(feature_extractor)
    out["reliable"] = bool(inception and min(n, m) >= RELIABLE_N)
    out["confidence"] = CONFIDENCE
    if feature_extractor is not None:
        out["feature_extractor"] = feature_extractor
    try:
        out.update(precision_recall_equal_n(real_d, fake_d, prc_k, prc_repeats, seed))
    except GenerationUnavailable as err:
        out["precision_recall_skipped"] = str(err)
    return out


def per_class(
    real: torch.Tensor,
    real_labels: np.ndarray,
    fake: torch.Tensor,
    fake_labels: np.ndarray,
    class_names: list[str],
    min_real: int = MIN_CLASS_REAL,
    **kwargs,
) -> dict[str, dict]:
    """set_metrics for each class with >= `min_real` real images; the others are skipped with the reason."""
    out = {}
    for c, name in enumerate(class_names):
        r, f = real[torch.from_numpy(real_labels == c)], fake[torch.from_numpy(fake_labels == c)]
        if len(r) < min_real or len(f) < 2:
            out[name] = {
                "skipped": f"{len(f)} generated and {len(r)} real images of this class "
                f"(need >= {min_real} real and 2 generated)",
                "n_generated": len(f),
                "n_real": len(r),
            }
            continue
        out[name] = set_metrics(r, f, **kwargs)
    return out


def skipped_classes(rows: dict[str, dict]) -> list[str]:
    """The classes per_class skipped, for a 'skipped: ...' line beside the table."""
    return [name for name, stats in rows.items() if "skipped" in stats]


def reliability_label(section: dict) -> str:
    """'n=300 gen / 1000 real, <extractor>; unreliable: ...', for tables and plots."""
    from lesion_lightning.metrics.naming import is_inception

    n, m = section.get("n_generated"), section.get("n_real")
    text = f"n={n} gen / {m} real"
    extractor = section.get("feature_extractor")
    if extractor:
        text += f", {extractor}"
    if extractor and not is_inception(extractor):
        text += "; not Inception: not comparable with published values"
    elif isinstance(n, int) and isinstance(m, int) and min(n, m) < RELIABLE_N:
        text += f"; unreliable: < {RELIABLE_N} on one side"
    return text


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
