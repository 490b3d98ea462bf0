"""Image grids with a caption above every tile (class, guidance), so a grid says what each tile is."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from lesion_lightning.utils.io import to_uint8_hwc


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):  # pragma: no cover - old Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """The longest prefix of text (ending in '…' when cut) that fits in width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def captioned_grid(
    images: torch.Tensor, captions: list[str] | None, nrow: int = 8, padding: int = 2
) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] -> (3, H', W') grid; with captions, each tile gets a white band
    above it holding its caption in black (cut with '…' if wider than the tile). No captions: make_grid.
    """
    if not captions:
        return make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)
    if len(captions) != len(images):
        raise ValueError(f"captioned_grid: {len(captions)} captions for {len(images)} images")
    h, w = images.shape[-2:]
    band = max(12, min(24, h // 8))
    font = _font(band - 3)
    tiles = []
    for image, caption in zip(images, captions, strict=True):
        strip = Image.new("RGB", (w, band), "white")
        draw = ImageDraw.Draw(strip)
        draw.text((2, 1), _fit(draw, caption, font, w - 4), fill="black", font=font)
        top = torch.from_numpy(np.array(strip)).permute(2, 0, 1).float() / 255  # (3, band, W)
        tiles.append(torch.cat([top, image.detach().float().cpu().clamp(0, 1)], dim=1))
    return make_grid(torch.stack(tiles), nrow=nrow, padding=padding, pad_value=1.0)


def grid_image(images: torch.Tensor, captions: list[str] | None, nrow: int = 8) -> Image.Image:
    """captioned_grid as a PIL image (for tests and notebooks)."""
    return Image.fromarray(to_uint8_hwc(captioned_grid(images, captions, nrow)))
