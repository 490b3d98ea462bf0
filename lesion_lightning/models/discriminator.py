"""PatchGAN discriminator (Isola et al. 2017; the NLayerDiscriminator of taming-transformers).

A plain nn.Module, free of Lightning. It maps images in [0, 1] to a (B, 1, h, w) grid of real/fake logits,
one per overlapping patch (receptive field 70 px at 3 layers), so the adversarial signal is about local
texture and edges, which is what an MSE decoder blurs. Normalisation is spectral (Miyato et al. 2018:
bounds each layer's Lipschitz constant, the usual guard against a discriminator that wins early) or none.
Batch norm is left out on purpose: real and fake batches pass separately, so its batch statistics would
tell the two apart by themselves.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("spectral", "none")


class PatchDiscriminator(nn.Module):
    """(B, in_channels, H, W) in [0, 1] -> (B, 1, H / 2**num_layers - 2, W / 2**num_layers - 2) float32 logits.

    num_layers stride-2 convs (channels doubling from `channels`, capped at 8x), one stride-1 conv, a
    1-channel stride-1 conv; LeakyReLU(0.2) between them. The forward runs in float32 with autocast off,
    so logits and the hinge loss on them cannot overflow under 16-mixed (taming-transformers #111).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 64,
        num_layers: int = 3,
        norm: Literal["spectral", "none"] = "spectral",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"model.discriminator.norm must be one of {NORMS}, got {norm!r}")
        if num_layers < 1:
            raise ValueError(f"model.discriminator.num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        wrap = spectral_norm if norm == "spectral" else (lambda m: m)
        widths = [in_channels] + [channels * min(2**i, 8) for i in range(num_layers + 1)]
        layers: list[nn.Module] = []
        for i in range(num_layers + 1):
            stride = 2 if i < num_layers else 1
            layers += [
                wrap(nn.Conv2d(widths[i], widths[i + 1], kernel_size=4, stride=stride, padding=1)),
                nn.LeakyReLU(0.2),
            ]
        layers.append(wrap(nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def min_image_size(self) -> int:
        """The smallest square input that still leaves a 1x1 logit grid."""
        # the two stride-1 k4 p1 convs take 1 px each (out = in - 1); each stride-2 one halves (floor)
        return 3 * 2**self.num_layers

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < self.min_image_size() or x.shape[-2] < self.min_image_size():
            raise ValueError(
                f"PatchDiscriminator with num_layers={self.num_layers} needs images of at least "
                f"{self.min_image_size()} px, got {tuple(x.shape[-2:])}; lower model.discriminator.num_layers"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            # [0, 1] -> [-1, 1], as taming's discriminator sees images
            return self.net(x.float() * 2.0 - 1.0)


def _init_weights(module: nn.Module) -> None:
    # DCGAN init (taming's weights_init): N(0, 0.02) conv weights
    if isinstance(module, nn.Conv2d):
        weight = (
            module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight
        )
        nn.init.normal_(weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
