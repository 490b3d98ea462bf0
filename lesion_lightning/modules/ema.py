"""Exponential moving average of a module's weights, on Lightning's own WeightAveraging machinery.

Lightning's WeightAveraging (2.6) already does the hard parts: it swaps the averaged weights in for
every validation epoch (so `val/loss`, the checkpoint selection by it and the image logger's samples
all use them), writes them as the checkpoint's `state_dict` (the training weights go under
`current_model_state`), so `load_from_checkpoint` -- and with it sample, evaluate and score -- gets the
averaged weights, and copies them into the module when fit ends (test after fit uses them too).

What is added here is the decay schedule: min(decay, (1 + n) / (10 + n)) after n updates (the
warm-up of timm's and TensorFlow's EMA). Without it a plain EMA at 0.999 over the quickstart's few
hundred steps would still be mostly its random initial weights.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging


def warmed_ema_decay(decay: float, num_averaged: int) -> float:
    """The decay used for update number ``num_averaged`` + 1 (0 before any update -> 0.1)."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class EMA(WeightAveraging):
    """EMA of all parameters (and buffers) after every optimizer step, with a warmed-up decay."""

    def __init__(self, decay: float = 0.999) -> None:
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
            raise ValueError(f"model.ema_decay must be a number in (0, 1) (null = no EMA), got {decay!r}")
        self.decay = float(decay)

        def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            d = warmed_ema_decay(self.decay, int(num_averaged))
            return averaged + (current - averaged) * (1.0 - d)

        super().__init__(avg_fn=avg_fn)

    @property
    def average_state(self) -> dict[str, torch.Tensor] | None:
        """The averaged weights as the module's state_dict (None before fit starts)."""
        if self._average_model is None:
            return None
        return self._average_model.module.state_dict()
