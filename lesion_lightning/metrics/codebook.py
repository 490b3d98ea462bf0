"""Codebook usage over a whole epoch: what torchmetrics lacks for vector quantizers.

Per-batch usage under-reports a healthy codebook (a batch of 8 images cannot touch all 512 codes),
so the counts are accumulated over the epoch and reduced across DDP ranks like any metric state.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class CodebookUsage(Metric):
    """Fraction of codes used and perplexity (exp of the code-frequency entropy) over all updates.

    Perplexity equals the codebook size when every code is used equally often and 1 when a single
    code takes everything (collapse).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, codebook_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.add_state(
            "counts", default=torch.zeros(codebook_size, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, indices: torch.Tensor) -> None:
        # (B, H, W) code indices -> per-code counts
        self.counts += torch.bincount(indices.reshape(-1).long(), minlength=self.codebook_size).to(
            self.counts
        )

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.counts.sum().clamp_min(1.0)
        probs = self.counts / total
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        return {
            "codebook_usage": (self.counts > 0).double().mean().float(),
            "perplexity": torch.exp(entropy).float(),
        }
