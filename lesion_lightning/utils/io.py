"""Atomic file writes: a crash never leaves a half-written output under its final name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def to_uint8_hwc(image: torch.Tensor):
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 numpy."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save a (3, H, W) float image in [0, 1] as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    Image.fromarray(to_uint8_hwc(image)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG, atomically (the caller closes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    fig.savefig(tmp, format="png", dpi=dpi)
    os.replace(tmp, path)
    return path
