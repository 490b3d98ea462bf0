"""Augmentation (albumentations, built from the Hydra config) and normalization to float CHW.

The report's augmentation is ONE of horizontal flip, vertical flip, rotation, colour jitter per
training sample (``conf/data/augment/report.yaml``: an ``albumentations.OneOf``). It runs on the
uint8 HWC image from the cache, before normalization; only the train split is augmented.

Normalization (``data.normalization``):

* ``minmax``: per image, ``(x - min) / (max - min)`` over all pixels and channels (the report's
  choice; it stretches each image's contrast but keeps its colour balance). A constant image -> 0.
* ``scale``: ``x / 255``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

NORMALIZATIONS: tuple[str, ...] = ("minmax", "scale")


def check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"data.normalization={normalization!r} is not one of {list(NORMALIZATIONS)}")
    return normalization


def build_augment(config: Mapping[str, Any] | None) -> Callable[..., dict] | None:
    """An albumentations pipeline from its Hydra config (a mapping with ``_target_``), or None."""
    if config is None or (isinstance(config, Mapping) and not config) or config == "none":
        return None  # data/augment=none (an empty group file), data.augment=null or `none`
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise TypeError(
            f"data.augment must be null or an albumentations pipeline config with _target_ "
            f"(e.g. conf/data/augment/report.yaml), got {config!r}"
        )
    from hydra.utils import instantiate

    return instantiate(dict(config), _convert_="all")


def to_tensor(image: np.ndarray, normalization: str) -> torch.Tensor:
    """uint8 ``(S, S, 3)`` -> float32 ``(3, S, S)`` in [0, 1] with the chosen normalization."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # (S, S, 3) -> (3, S, S)
    if normalization == "minmax":
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    if normalization == "scale":
        return x / 255.0
    raise ValueError(f"data.normalization={normalization!r} is not one of {list(NORMALIZATIONS)}")


class ImageTransform:
    """uint8 HWC image -> (optional augmentation) -> normalized float CHW tensor."""

    def __init__(self, augment: Callable[..., dict] | None, normalization: str) -> None:
        self.augment = augment
        self.normalization = check_normalization(normalization)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.augment is not None:
            image = self.augment(image=np.asarray(image))["image"]
        return to_tensor(image, self.normalization)
