"""The 8 dihedral views of a square image (4 rotations x flip), the prior's augmentations in code space.

Dermoscopy has no canonical orientation, so every view of a training lesion is as plausible a lesion
as the original. `encode train_views=K` encodes each train image under views 0..K-1 of ``VIEWS`` and
stores the K code grids as extra train rows. The order makes the first 1, 2, 4 and 8 views subgroups
(identity; + horizontal flip; + vertical flip and 180-degree rotation; all 8), so K = 2 or 4 is a
closed set of transforms too.

The views act on images, never on code grids: the VQ-VAE encoder is not equivariant, so the codes of
a rotated image are not the rotated codes of the image (tests/test_views.py checks that the encode
command follows this). Each view is a pure permutation of pixels, so it commutes with per-image
min-max normalization and applying it to the normalized tensor equals applying it to the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

# name -> transform of (..., H, W) tensors; the last two dims are rows, columns
VIEWS: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...] = (
    ("identity", lambda x: x),
    ("hflip", lambda x: x.flip(-1)),
    ("vflip", lambda x: x.flip(-2)),
    ("rot180", lambda x: x.flip(-2, -1)),
    ("rot90", lambda x: x.rot90(1, (-2, -1))),
    ("rot270", lambda x: x.rot90(-1, (-2, -1))),
    ("transpose", lambda x: x.transpose(-2, -1)),
    ("antitranspose", lambda x: x.flip(-2, -1).transpose(-2, -1)),
)
VIEW_NAMES: tuple[str, ...] = tuple(name for name, _ in VIEWS)

# albumentations transforms whose presence in data.augment says orientation is not meaningful
_ORIENTATION_AUGMENTS = (
    "HorizontalFlip",
    "VerticalFlip",
    "Flip",
    "Rotate",
    "RandomRotate90",
    "Transpose",
    "D4",
)


def apply_view(images: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (an index into VIEWS) of (..., H, W) images; rotations need H == W."""
    if not 0 <= view < len(VIEWS):
        raise ValueError(f"view must be in [0, {len(VIEWS)}), got {view}")
    if view >= 4 and images.shape[-1] != images.shape[-2]:
        raise ValueError(f"view {VIEW_NAMES[view]} needs square images, got {tuple(images.shape[-2:])}")
    return VIEWS[view][1](images)


def _targets(config: Any) -> Iterable[str]:
    """Every `_target_` in a (nested) Hydra augmentation config."""
    if isinstance(config, Mapping):
        if isinstance(config.get("_target_"), str):
            yield config["_target_"]
        for value in config.values():
            yield from _targets(value)
    elif isinstance(config, list | tuple):
        for value in config:
            yield from _targets(value)


def augment_has_orientation(augment: Mapping[str, Any] | None) -> bool:
    """True if the data's augmentation (data.augment) flips or rotates images."""
    return any(t.rsplit(".", 1)[-1] in _ORIENTATION_AUGMENTS for t in _targets(augment))


def resolve_train_views(train_views: int | str | None, augment: Mapping[str, Any] | None) -> int:
    """`encode.train_views`: an integer 1..8, or null/"auto" = 8 when data.augment flips/rotates, else 1."""
    if train_views is None or train_views == "auto":
        return len(VIEWS) if augment_has_orientation(augment) else 1
    if (
        isinstance(train_views, bool)
        or not isinstance(train_views, int)
        or not 1 <= train_views <= len(VIEWS)
    ):
        raise ValueError(
            f"encode.train_views must be an integer in [1, {len(VIEWS)}] (1 = no views, 8 = all dihedral views) "
            f"or null (auto: 8 when data.augment flips or rotates, else 1), got {train_views!r}"
        )
    return train_views
