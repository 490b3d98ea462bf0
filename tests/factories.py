"""Small models shared by the model tests."""

from __future__ import annotations

import torch

from lesion_lightning.models.pixelcnn import GatedPixelCNN


def randomize_positions(model: GatedPixelCNN) -> None:
    # They start at zero (an untrained model equals the plain one); tests need them to matter.
    for layer in model.layers:
        torch.nn.init.normal_(layer.pos_row)
        torch.nn.init.normal_(layer.pos_col)


def make_pixelcnn(
    num_codes: int,
    num_layers: int = 2,
    kernel_size: int = 3,
    num_classes: int = 0,
    channels: int = 12,
    grid: tuple[int, int] | None = None,
    **kwargs,
) -> GatedPixelCNN:
    """A small, seeded model; ``grid`` turns on position embedding for that (H, W), with random values."""
    torch.manual_seed(0)
    model = GatedPixelCNN(
        num_codes,
        channels,
        num_layers,
        kernel_size,
        num_classes,
        grid_size=grid,
        position_embedding=bool(grid),
        **kwargs,
    )
    if grid:
        randomize_positions(model)
    return model
