"""The prior as a likelihood: per-position negative log-likelihood maps, per-image bits/dim, OOD scores.

MONAI's VQ-VAE + transformer inferer (Pinaya et al. 2022, "Unsupervised brain imaging 3D anomaly
detection and segmentation with transformers") scores images by the likelihood of their codes; the
Gated PixelCNN gives the same in one forward pass: every position's conditional p(x_ij | x_<ij) at once.

Three per-position maps, all in nats, all (B, H, W):

- ``position_nll``: -log p(x_ij | x_<ij, label) from the prior (the training loss, unreduced). Its mean
  over a grid / ln 2 is the image's bits/dim; its mean over a dataset is the training/test loss.
- ``class_marginal_nll``: for a class-conditional prior scoring images without (known) labels. The image's
  likelihood under the prior with a uniform class prior, p(x) = 1/C * sum_c p(x | c), decomposed by the
  chain rule into exact per-position terms: with S_c(t) = log p(x_<t | c),
  -log p(x_t | x_<t) = -[logsumexp_c(S_c(t) + log p(x_t | x_<t, c)) - logsumexp_c(S_c(t))], which sum
  over t to -log p(x) (the 1/C cancels). All C classes run as one batch of C*B grids.
- ``baseline_nll``: -log q(x_ij) under the per-position marginal baseline of metrics/prior.py (code
  frequencies per position in the train split).

Raw likelihoods of deep generative models rank simple out-of-distribution inputs as *more* likely
(Nalisnick et al. 2019, "Do deep generative models know what they don't know?"), because much of the
likelihood measures input complexity. Serra et al. 2020 ("Input complexity and out-of-distribution
detection with likelihood-based generative models") subtract a complexity estimate; here the corrected
score is NLL_prior - NLL_baseline per image (bits/dim), a likelihood ratio against the simplest model
of the same codes. For both scores, higher = less like the training data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_roc

from lesion_lightning.metrics.stats import Interval
from lesion_lightning.models.pixelcnn import GatedPixelCNN


@torch.no_grad()
def position_nll(
    model: GatedPixelCNN, indices: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, H, W) code grids (+ (B,) labels) -> (B, H, W) -log p(x_ij | x_<ij, label) in nats, float32."""
    logits = model(indices, labels)  # (B, K, H, W)
    return F.cross_entropy(logits.float(), indices, reduction="none")


@torch.no_grad()
def class_marginal_nll(model: GatedPixelCNN, indices: torch.Tensor) -> torch.Tensor:
    """(B, H, W) grids -> (B, H, W) per-position NLL (nats) of p(x) = mean over classes of p(x | c).

    Exact chain-rule terms (see the module docstring): their sum over a grid is -log p(x).
    """
    c = model.num_classes
    if c == 0:
        raise ValueError("class_marginal_nll needs a class-conditional prior; use position_nll")
    b, h, w = indices.shape
    labels = torch.arange(c, device=indices.device).repeat_interleave(b)  # (C*B,): class 0 x B, 1 x B, ...
    lp = -position_nll(model, indices.repeat(c, 1, 1), labels).view(c, b, h * w)  # log p(x_t | x_<t, c)
    before = lp.cumsum(dim=-1) - lp  # S_c(t) = log p(x_<t | c), raster order
    nll = torch.logsumexp(before, dim=0) - torch.logsumexp(before + lp, dim=0)  # (B, H*W)
    return nll.view(b, h, w)


def baseline_nll(log_probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(H, W, K) per-position log-probabilities (metrics.prior.position_log_probs) -> (B, H, W) -log q, nats."""
    h, w, _ = log_probs.shape
    if tuple(indices.shape[1:]) != (h, w):
        raise ValueError(f"baseline_nll: grids {tuple(indices.shape[1:])} but the baseline is for {(h, w)}")
    flat = log_probs.reshape(h * w, -1)  # (H*W, K)
    positions = torch.arange(h * w, device=indices.device)
    return -flat[positions, indices.reshape(indices.shape[0], -1)].view_as(indices).float()


def bits_per_dim(nll: torch.Tensor) -> torch.Tensor:
    """(B, H, W) nats -> (B,) per-image mean over positions, in bits."""
    return nll.flatten(1).mean(dim=1) / math.log(2)


def ood_metrics(
    in_scores: np.ndarray | torch.Tensor,
    ood_scores: np.ndarray | torch.Tensor,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """AUROC and AUPR (average precision) of telling ood (positive) from in-distribution by a score where
    higher = more anomalous, with 95% percentile-bootstrap intervals (each side resampled separately) and
    the ROC curve (fpr, tpr lists)."""
    pos = torch.as_tensor(np.asarray(ood_scores), dtype=torch.float64)
    neg = torch.as_tensor(np.asarray(in_scores), dtype=torch.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(
            f"ood_metrics needs scores on both sides, got {len(neg)} in-distribution and {len(pos)} ood"
        )
    preds = torch.cat([neg, pos])
    target = torch.cat([torch.zeros(len(neg), dtype=torch.long), torch.ones(len(pos), dtype=torch.long)])
    fpr, tpr, _ = binary_roc(preds, target)
    result = {
        "auroc": float(binary_auroc(preds, target)),
        "aupr": float(binary_average_precision(preds, target)),
        "num_in": len(neg),
        "num_ood": len(pos),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }
    if num_bootstrap > 0:
        g = torch.Generator().manual_seed(seed)
        aurocs, auprs = [], []
        for _ in range(num_bootstrap):
            p = pos[torch.randint(len(pos), (len(pos),), generator=g)]
            n = neg[torch.randint(len(neg), (len(neg),), generator=g)]
            aurocs.append(float(binary_auroc(torch.cat([n, p]), target)))
            auprs.append(float(binary_average_precision(torch.cat([n, p]), target)))
        result["auroc_ci"] = Interval.percentile(aurocs).to_json()
        result["aupr_ci"] = Interval.percentile(auprs).to_json()
        result["num_bootstrap"] = num_bootstrap
    return result
