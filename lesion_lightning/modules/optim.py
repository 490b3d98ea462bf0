"""Optimizer + LR schedule shared by both stages' LightningModules."""

from __future__ import annotations

import math

import torch

SCHEDULERS = (None, "cosine", "constant")


def adam_with_schedule(
    params,
    lr: float,
    weight_decay: float,
    scheduler: str | None,
    warmup_steps: int,
    total_steps: int,
    betas: tuple[float, float] = (0.9, 0.999),
) -> dict:
    """Adam (the report's optimizer) with optional linear warm-up and cosine decay per step."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"model.scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if scheduler is None and warmup_steps <= 0:
        return {"optimizer": optimizer}
    total = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if scheduler == "cosine":
            progress = min((step - warmup_steps) / max(total - warmup_steps, 1), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
