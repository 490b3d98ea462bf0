"""How much fine detail a reconstruction keeps: high-frequency energy relative to its original.

An MSE-trained decoder predicts the mean of what its code cannot pin down, which removes high spatial
frequencies first, so PSNR can stay high while edges and texture go. The figure here is, per image,

    HF(recon) / HF(original),   HF(img) = sum of |FFT(gray(img) - mean)|^2 over frequencies with radius
                                           > cutoff cycles/pixel (default 0.25: the upper half of the band)

on the same [0, 1] scale both images are compared on. 1.0: as much high-frequency energy as the originals;
below 1: blurrier; above 1: added detail (which may be hallucinated texture or artefacts: read it with
PSNR/SSIM beside it, never alone).
"""

from __future__ import annotations

import torch
from torch import Tensor


def high_frequency_energy(images: Tensor, cutoff: float = 0.25) -> Tensor:
    """(N, C, H, W) images -> (N,) float64 energy above `cutoff` cycles/pixel of their grayscale."""
    if not 0.0 < cutoff < 0.5 * 2**0.5:
        raise ValueError(f"cutoff must be in (0, 0.707) cycles/pixel, got {cutoff}")
    gray = images.double().mean(dim=1)  # (N, H, W)
    gray = gray - gray.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(gray).abs().square()  # (N, H, W)
    fy = torch.fft.fftfreq(gray.shape[1], dtype=torch.float64)
    fx = torch.fft.fftfreq(gray.shape[2], dtype=torch.float64)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # (H, W) cycles/pixel
    return (power * (radius > cutoff)).sum(dim=(1, 2))


def sharpness_ratio(recon: Tensor, original: Tensor, cutoff: float = 0.25) -> Tensor:
    """(N,) per-image HF(recon) / HF(original); originals without any high-frequency energy give nan."""
    hf_orig = high_frequency_energy(original, cutoff)
    ratio = high_frequency_energy(recon, cutoff) / hf_orig
    return torch.where(hf_orig > 0, ratio, torch.full_like(ratio, float("nan")))
