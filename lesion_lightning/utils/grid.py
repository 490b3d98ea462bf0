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


MAX_TILES = 64
PER_ROW = 8


def grid_selection(
    num_samples: int,
    labels: list[int] | None,
    seed: int,
    max_tiles: int = MAX_TILES,
    per_row: int = PER_ROW,
) -> tuple[list[int | None], int]:
    """Which samples grid.png shows: (sample indices in tile order, None = a blank tile; tiles per row).

    A seeded draw without replacement, at most `max_tiles` tiles: unconditional samples fill rows of
    `per_row`; labelled samples get one row per class (in class order, classes without samples left
    out), each row the class's draw padded with blanks, so a row never mixes classes. The same seed and
    labels give the same selection, however the samples were batched.
    """
    if num_samples < 1:
        raise ValueError("grid_selection: no samples")
    rng = np.random.default_rng([seed, 7])  # its own stream: independent of the sampling draws
    if labels is None:
        take = min(num_samples, max_tiles)
        return sorted(rng.choice(num_samples, size=take, replace=False).tolist()), min(per_row, take)
    if len(labels) != num_samples:
        raise ValueError(f"grid_selection: {len(labels)} labels for {num_samples} samples")
    classes = sorted(set(int(c) for c in labels))
    cols = max(1, min(per_row, max_tiles // len(classes)))
    classes = classes[: max(1, max_tiles // cols)]  # more classes than rows fit: the first ones
    members = np.asarray(labels)
    tiles: list[int | None] = []
    for c in classes:
        of_class = np.flatnonzero(members == c)
        pick = sorted(rng.choice(of_class, size=min(cols, len(of_class)), replace=False).tolist())
        tiles += pick + [None] * (cols - len(pick))
    return tiles, cols
