"""Generated-vs-real set metrics on one feature space, each with its sample sizes and a 95 % interval.

- FID: torchmetrics' FrechetInceptionDistance on the given features (the point estimate), and a
  percentile-bootstrap interval over resampled generated sets against the fixed real set. The
  replicates use the identity tr sqrt(S_r S_g) = sum sqrt(eig(R S_g R)), R = S_r^(1/2): with P = X R
  computed once, a replicate costs one Gram matrix of the resampled rows of P and one eigvalsh of
  size min(n, F), not a fresh matrix square root.
- KID: the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / F + 1)^3 over the full
  sets (`kid`, with a bootstrap interval from the precomputed kernel matrices: a resample is a count
  vector), plus torchmetrics' subset mean/std (`kid_mean`, `kid_std`) as published KIDs report it.
- Precision / recall (Kynkaenniemi et al. 2019, k nearest neighbours): torch-fidelity's
  `prc_features_to_metric`, on the same features.

FID is biased upwards at small n (its small-sample bias falls roughly like 1/n), so values from fewer
than RELIABLE_N generated images are flagged `reliable: false` and the report prints them as such.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lesion_lightning.metrics.generation import GenerationUnavailable, fid_kid
from lesion_lightning.metrics.stats import CONFIDENCE, Interval

# below this many generated images an FID/KID is reported as unreliable (the Inception feature size)
RELIABLE_N = 2048


def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


class FrechetBootstrap:
    """FID of any resample of the generated rows against fixed real features, in float64."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, device: torch.device | str = "cpu") -> None:
        real, fake = real.double().to(device), fake.double().to(device)
        self.mu_r, cov_r = _mean_cov(real)
        self.trace_r = float(torch.trace(cov_r))
        root = _sqrt_psd(cov_r)  # (F, F)
        self.fake = fake
        self.proj = fake @ root  # (n, F): rows of X R

    def __call__(self, rows: torch.Tensor | None = None) -> float:
        x = self.fake if rows is None else self.fake[rows]
        p = self.proj if rows is None else self.proj[rows]
        n = x.shape[0]
        mu_g = x.mean(0)
        xc = x - mu_g
        pc = p - p.mean(0)
        trace_g = float(xc.square().sum()) / (n - 1)
        gram = pc @ pc.T if n <= pc.shape[1] else pc.T @ pc  # same nonzero eigenvalues
        eig = torch.linalg.eigvalsh(gram / (n - 1)).clamp(min=0)
        cross = float(eig.sqrt().sum())
        return float((self.mu_r - mu_g).square().sum()) + self.trace_r + trace_g - 2 * cross


class KernelBootstrap:
    """Unbiased MMD^2 (KID's estimator) of a resampled generated set against fixed real features."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, device: torch.device | str = "cpu") -> None:
        real, fake = real.double().to(device), fake.double().to(device)
        dims = real.shape[1]
        m = real.shape[0]
        k_rr = (real @ real.T / dims + 1) ** 3
        self.real_term = float((k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1)))
        self.k_gg = (fake @ fake.T / dims + 1) ** 3  # (n, n)
        self.k_gg_diag = self.k_gg.diagonal().clone()
        self.k_gr_rows = ((fake @ real.T / dims + 1) ** 3).mean(1)  # (n,) mean kernel to the real set
        self.n = fake.shape[0]

    def __call__(self, counts: torch.Tensor | None = None) -> float:
        """`counts[i]`: how often generated row i is in the resample (all ones: the observed set)."""
        c = torch.ones(self.n, dtype=torch.float64, device=self.k_gg.device) if counts is None else counts
        n = float(c.sum())
        # ordered pairs of distinct positions of the resample: sum c_i c_j k_ij - sum c_i k_ii
        gen_term = float(c @ self.k_gg @ c - c @ self.k_gg_diag) / (n * (n - 1))
        cross = float(c @ self.k_gr_rows) / n
        return gen_term + self.real_term - 2 * cross


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Kynkaenniemi et al.'s precision (fidelity) and recall (diversity), by torch-fidelity."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    if min(len(real), len(fake)) <= k:
        raise GenerationUnavailable(
            f"precision/recall with k={k} need more than {k} real and generated images, got "
            f"{len(real)} real and {len(fake)} generated"
        )
    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, verbose=False)
    return {"precision": float(out["precision"]), "recall": float(out["recall"]), "prc_k": k}


def set_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    num_bootstrap: int = 100,
    prc_k: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """FID, KID, precision/recall with n, reliability flag and bootstrap intervals (over generated sets)."""
    scores = fid_kid(real, fake, kid_subset_size, kid_subsets, seed)
    n, m = len(fake), len(real)
    frechet = FrechetBootstrap(real, fake, device)
    kernel = KernelBootstrap(real, fake, device)
    gen = torch.Generator().manual_seed(seed)
    fid_reps, kid_reps = [], []
    for _ in range(num_bootstrap):
        rows = torch.randint(0, n, (n,), generator=gen)
        fid_reps.append(frechet(rows.to(frechet.fake.device)))
        counts = torch.bincount(rows, minlength=n).double().to(kernel.k_gg.device)
        kid_reps.append(kernel(counts))
    out = {
        "fid": scores["fid"],
        "fid_ci": Interval.percentile(fid_reps).to_json() if num_bootstrap else None,
        "kid": kernel(),
        "kid_ci": Interval.percentile(kid_reps).to_json() if num_bootstrap else None,
        "kid_mean": scores["kid_mean"],
        "kid_std": scores["kid_std"],
        "kid_subset_size": scores["kid_subset_size"],
        "num_features": scores["num_features"],
        "n_generated": n,
        "n_real": m,
        "reliable": n >= RELIABLE_N,
        "num_bootstrap": num_bootstrap,
        "confidence": CONFIDENCE,
    }
    try:
        out.update(precision_recall(real, fake, prc_k))
    except GenerationUnavailable as err:
        out["precision_recall_skipped"] = str(err)
    return out


def per_class(
    real: torch.Tensor,
    real_labels: np.ndarray,
    fake: torch.Tensor,
    fake_labels: np.ndarray,
    class_names: list[str],
    **kwargs,
) -> dict[str, dict]:
    """set_metrics for each class: its samples against the real images of that class."""
    out = {}
    for c, name in enumerate(class_names):
        r, f = real[torch.from_numpy(real_labels == c)], fake[torch.from_numpy(fake_labels == c)]
        if min(len(r), len(f)) < 2:
            out[name] = {
                "skipped": f"{len(f)} generated and {len(r)} real images of this class (need 2 each)"
            }
            continue
        out[name] = set_metrics(r, f, **kwargs)
    return out


def reliability_label(section: dict) -> str:
    """'n=300 generated / 1000 real, <extractor>', for tables and plots."""
    n, m = section.get("n_generated"), section.get("n_real")
    text = f"n={n} gen / {m} real"
    if section.get("feature_extractor"):
        text += f", {section['feature_extractor']}"
    if isinstance(n, int) and n < RELIABLE_N:
        text += f"; unreliable: < {RELIABLE_N} generated"
    return text


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
