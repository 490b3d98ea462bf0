"""Pixel conversions shared by the cache build, duplicate hashing and the data benchmark (PIL only).

The cache module's docstring says what each PIL mode becomes; these functions sit below both the cache
and the duplicate detector so neither has to import the other.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_MODES: tuple[str, ...] = ("squash", "center_crop", "pad")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for what each mode becomes)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit data scaled by 1/257 (65535 -> 255); float data assumed in [0, 1] if it fits there
        scale = 255.0 / 65535.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 1.0
        if mode == "F" and a.max(initial=0) <= 1.0:
            scale = 255.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(a[..., None], 3, axis=2), "RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB... (raises ValueError where PIL can't)


def resize_image(img: Image.Image, size: int, resize: str) -> Image.Image:
    """``img`` as a ``size`` x ``size`` image, by ``resize`` (one of :data:`RESIZE_MODES`)."""
    w, h = img.size
    if resize == "squash":
        return img.resize((size, size), Image.Resampling.LANCZOS)
    if resize == "center_crop":  # central square of the short side, then scale
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    if resize == "pad":  # long side to `size`, centred on black
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (size, size))
        canvas.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), ((size - nw) // 2, (size - nh) // 2))
        return canvas
    raise ValueError(f"data.resize={resize!r} is not one of {list(RESIZE_MODES)}")
