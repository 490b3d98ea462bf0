"""Pictures for likelihood scoring: image | reconstruction | per-position NLL heatmap, and ROC curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lesion_lightning.utils.io import save_figure


@dataclass
class ScoredImage:
    """One row of a heatmap picture. ``nll_bits``: (H, W) per-position -log2 p of its codes."""

    name: str
    image: torch.Tensor  # (3, S, S) in [0, 1]
    reconstruction: torch.Tensor  # (3, S, S) in [0, 1], decoded from the scored codes
    nll_bits: torch.Tensor  # (H, W)
    bits_per_dim: float
    corrected: float


def upsample(nll: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(H, W) map -> (S, S) numpy, nearest: each code covers its patch of pixels, no invented detail."""
    return F.interpolate(nll[None, None].float(), size=size, mode="nearest")[0, 0].cpu().numpy()


def heatmap_figure(rows: list[ScoredImage], title: str, path: str | Path, vmax: float) -> Path:
    """One row per image: the image, its reconstruction from the scored codes, and the per-position NLL
    (bits, nearest-upsampled to the image) over the image. One colour scale [0, vmax] for every row (and
    every picture of a run), so rows compare."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 2.5 * len(rows) + 0.7), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False)
    mappable = None
    for ax_row, row in zip(axes, rows, strict=True):
        image = row.image.permute(1, 2, 0).cpu().numpy()
        ax_row[0].imshow(image)
        ax_row[0].set_title(row.name if len(row.name) <= 40 else "…" + row.name[-39:], fontsize=8)
        ax_row[1].imshow(row.reconstruction.permute(1, 2, 0).cpu().numpy())
        ax_row[1].set_title("reconstruction\n(the scored codes)", fontsize=8)
        ax_row[2].imshow(image)
        mappable = ax_row[2].imshow(
            upsample(row.nll_bits, tuple(image.shape[:2])), cmap="magma", alpha=0.6, vmin=0.0, vmax=vmax
        )
        ax_row[2].set_title(f"{row.bits_per_dim:.3f} bits/dim\ncorrected {row.corrected:+.3f}", fontsize=8)
        for ax in ax_row:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.colorbar(mappable, ax=axes[:, 2].tolist(), label="-log2 p(code | codes before), bits", shrink=0.8)
    return save_figure(fig, path, dpi=100)


def roc_figure(curves: dict[str, dict], title: str, path: str | Path) -> Path:
    """ROC curves ``{name: ood_metrics(...) result}`` on one plot, AUROC (95% CI) in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    for name, m in curves.items():
        ci = m.get("auroc_ci")
        label = f"{name}: AUROC {m['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (in-distribution flagged)")
    ax.set_ylabel("true positive rate (ood flagged)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
