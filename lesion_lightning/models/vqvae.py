"""VQ-VAE (van den Oord et al., 2017): strided-conv encoder -> vector quantizer -> transposed-conv decoder.

Plain nn.Modules, free of Lightning. Images are float in [0, 1]; the decoder output is unconstrained (train
it with MSE against the [0, 1] image, clamp only for display and metrics). The training loss is

    mse(recon, x) + out.vq_loss        where vq_loss = codebook_loss + beta * commitment_loss

A 256x256 image with num_downsamples = 3 / 2 / 1 gives a 32x32 / 64x64 / 128x128 grid of code indices.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lesion_lightning.models.layers import ResidualStack
from lesion_lightning.models.quantizer import VectorQuantizer


class VQVAEOutput(NamedTuple):
    recon: Tensor  # (B, C, H, W) unconstrained reconstruction
    indices: Tensor  # (B, h, w) long code indices
    quantized: Tensor  # (B, D, h, w) codebook vectors (straight-through gradient to z_e)
    z_e: Tensor  # (B, D, h, w) encoder output before quantization
    vq_loss: Tensor  # scalar codebook_loss + beta * commitment_loss
    codebook_loss: Tensor  # scalar (zero tensor in EMA mode)
    commitment_loss: Tensor  # scalar, before beta


def stage_channels(hidden_channels: int, num_stages: int) -> list[int]:
    """Channels after each downsampling, doubling up to ``hidden_channels`` (e.g. 128, 3 -> [32, 64, 128]).

    Full-resolution layers are the expensive ones, so they get the fewest channels.
    """
    floor = min(hidden_channels, 16)
    return [max(hidden_channels // 2 ** (num_stages - 1 - i), floor) for i in range(num_stages)]


class Encoder(nn.Module):
    """(B, in_channels, H, W) -> (B, code_dim, H / 2**n, W / 2**n): n stride-2 convs, residual stack, 1x1 conv."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        res_channels: int,
        num_res_blocks: int,
        num_downsamples: int,
        code_dim: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for channels in stage_channels(hidden_channels, num_downsamples):
            layers += [nn.Conv2d(prev, channels, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            prev = channels
        layers += [
            nn.Conv2d(prev, hidden_channels, kernel_size=3, padding=1),
            ResidualStack(hidden_channels, res_channels, num_res_blocks),
            nn.Conv2d(hidden_channels, code_dim, kernel_size=1),  # pre-quantization projection
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, code_dim, h, w) -> (B, out_channels, h * 2**n, w * 2**n): 3x3 conv, residual stack, n transposed convs."""

    def __init__(
        self,
        out_channels: int,
        hidden_channels: int,
        res_channels: int,
        num_res_blocks: int,
        num_upsamples: int,
        code_dim: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(code_dim, hidden_channels, kernel_size=3, padding=1),
            ResidualStack(hidden_channels, res_channels, num_res_blocks),
        ]
        # Mirror of the encoder: channels halve as the resolution doubles; the last conv emits the image.
        widths = stage_channels(hidden_channels, num_upsamples)[::-1] + [out_channels]  # [hidden, ..., out]
        for i in range(num_upsamples):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], kernel_size=4, stride=2, padding=1))
            if i < num_upsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    """Encoder + VectorQuantizer + Decoder. Built from primitives only, so checkpoints rebuild it from hparams."""

    def __init__(
        self,
        in_channels: int = 3,
        hidden_channels: int = 128,
        res_channels: int = 64,
        num_res_blocks: int = 2,
        num_downsamples: int = 3,
        codebook_size: int = 512,
        code_dim: int = 64,
        beta: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
    ) -> None:
        super().__init__()
        if num_downsamples < 1:
            raise ValueError(
                f"num_downsamples must be >= 1 (3/2/1 give 32/64/128 grids at 256 px), got {num_downsamples}"
            )
        self.in_channels = in_channels
        self.num_downsamples = num_downsamples
        self.encoder = Encoder(
            in_channels, hidden_channels, res_channels, num_res_blocks, num_downsamples, code_dim
        )
        self.quantizer = VectorQuantizer(
            codebook_size,
            code_dim,
            beta=beta,
            ema=ema,
            ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init,
        )
        self.decoder = Decoder(
            in_channels, hidden_channels, res_channels, num_res_blocks, num_downsamples, code_dim
        )

    @property
    def downsample_factor(self) -> int:
        return 2**self.num_downsamples

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last weight (the image-emitting transposed conv): where VQGAN's adaptive weight
        compares the reconstruction and adversarial gradients."""
        return self.decoder.net[-1].weight

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Grid (h, w) of code indices for an image of ``image_size`` (int for square, or (H, W))."""
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the VQ-VAE downsample factor {f} "
                f"(num_downsamples={self.num_downsamples}); set data.image_size to a multiple of {f}"
            )
        return height // f, width // f

    def _check_images(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        self.latent_shape((x.shape[2], x.shape[3]))

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantize (training mode also updates codebook state, see VectorQuantizer) and decode."""
        self._check_images(x)
        z_e = self.encoder(x)
        q = self.quantizer(z_e)
        recon = self.decoder(q.quantized)
        return VQVAEOutput(
            recon=recon,
            indices=q.indices,
            quantized=q.quantized,
            z_e=z_e,
            vq_loss=q.loss,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
        )

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> code indices (B, h, w) long.

        Deterministic and side-effect free in train and eval mode alike: no k-means init, EMA or dead-code
        update runs here (the network has no dropout or batch norm either).
        """
        self._check_images(x)
        return self.quantizer.quantize_indices(self.encoder(x))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices (B, h, w) -> images (B, C, h * f, w * f), unconstrained like ``forward().recon``.

        In eval mode ``decode_indices(encode(x))`` equals ``forward(x).recon`` exactly.
        """
        return self.decoder(self.quantizer.get_output_from_indices(indices))
