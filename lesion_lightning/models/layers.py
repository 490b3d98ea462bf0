"""Building blocks shared by the VQ-VAE encoder and decoder."""

from __future__ import annotations

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """Pre-activation residual block of the VQ-VAE paper: x + conv1x1(relu(conv3x3(relu(x)))).

    No normalisation layer, so outputs depend on each image alone (encode/decode are batch independent).
    """

    def __init__(self, channels: int, res_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, res_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(res_channels, channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResidualStack(nn.Sequential):
    """``num_blocks`` residual blocks followed by a ReLU (the stack's output feeds a plain conv)."""

    def __init__(self, channels: int, res_channels: int, num_blocks: int) -> None:
        super().__init__(*(ResidualBlock(channels, res_channels) for _ in range(num_blocks)), nn.ReLU())
