"""Image metrics on the original 8-bit scale when the data were stretched per image.

With `data.normalization=minmax` every image is mapped to [0, 1] by its own (x - min) / (max - min), so
a reconstruction error of e on that scale is an error of e * (max - min) grey levels on the image as
stored: PSNR on the stretched images is neither comparable with published 8-bit figures nor across
normalisations. Undoing each image's stretch with its own min and max (read from the un-normalised
original) gives the reconstruction as an 8-bit image, which is compared with that original.
"""

from __future__ import annotations

import numpy as np
import torch

from lesion_lightning.metrics.stats import per_image_psnr

SCALE_NOTES = {
    "minmax": "per-image min-max: each image stretched to span [0, 1] before the metric (data_range 1)",
    "scale": "x / 255: the 8-bit scale divided by 255 (data_range 1)",
}
PSNR_8BIT_DEFINITION = (
    "mean over images of 10 log10(255^2 / MSE_i), MSE_i between the 8-bit original and the "
    "reconstruction un-stretched with that original's own min/max and rounded to 8 bits"
)


def unstretch(stretched: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images on the per-image min-max scale -> 8-bit values (float, rounded, in [0, 255]),
    using each `original` (uint8, same shape) image's min and max over all pixels and channels.

    A constant original (max == min; normalised to zeros) maps back to its constant value."""
    original = original.double()
    lo = original.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    hi = original.amax(dim=(1, 2, 3), keepdim=True)
    return (stretched.double() * (hi - lo) + lo).round().clamp(0, 255)


def psnr_8bit(stretched_recon: torch.Tensor, original: torch.Tensor) -> np.ndarray:
    """(B,) PSNR in dB of each min-max-scale reconstruction against its uint8 original, on 0..255."""
    if stretched_recon.shape != original.shape:
        raise ValueError(
            f"reconstructions {tuple(stretched_recon.shape)} vs originals {tuple(original.shape)}"
        )
    restored = unstretch(stretched_recon, original)
    mse = (restored - original.double()).square().flatten(1).mean(1)
    return per_image_psnr(mse.cpu().numpy(), data_range=255.0)
