"""Generated lesions as a labelled dataset, mixable with real images of a ``LesionDataModule`` split.

``lesion_lightning.sample`` writes ``sample_0000.png ...`` and ``samples.json`` whose ``labels`` list
holds each sample's class name (conditional priors). :func:`read_labelled_samples` reads that back,
and :class:`GeneratedImages` serves the PNGs exactly like ``SplitDataset`` serves cached real images:
uint8 HWC -> the same albumentations augmentation (training only) -> the same normalisation, as
``{"image", "label", "index"}`` dicts, so ``ConcatDataset([real, generated])`` batches them together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lesion_lightning.data.transforms import ImageTransform


@dataclass(frozen=True)
class LabelledSamples:
    """Sample files (absolute paths) with their class names, as recorded in ``samples.json``."""

    files: list[Path]
    labels: list[str]
    meta: dict

    def of_class(self, name: str) -> list[Path]:
        return [f for f, label in zip(self.files, self.labels, strict=True) if label == name]


def read_labelled_samples(samples_dir: str | Path) -> LabelledSamples:
    """The samples of a ``lesion_lightning.sample`` output folder and their labels.

    Raises a clear error when the folder, its ``samples.json`` or a listed file is missing, or when
    the samples carry no labels (an unconditional prior's samples cannot train a classifier).
    """
    samples_dir = Path(samples_dir)
    meta_path = samples_dir / "samples.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"samples_dir={samples_dir} holds no samples.json; pass the `samples` folder written by "
            "`python -m lesion_lightning.sample` (or samples_dir=null to generate samples)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); re-run the sample stage") from err
    files, labels = meta.get("files") or [], meta.get("labels") or []
    if len(files) != len(labels):
        raise ValueError(f"{meta_path}: {len(files)} files but {len(labels)} labels; re-run the sample stage")
    if any(label is None for label in labels):
        raise ValueError(
            f"{meta_path}: the samples carry no class labels (an unconditional prior); the utility "
            "stage needs a class-conditional PixelCNN (model.net.num_classes > 0)"
        )
    paths = [samples_dir / f for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{meta_path} lists files that do not exist: {missing[:5]}")
    return LabelledSamples(paths, list(labels), meta)


class GeneratedImages(Dataset):
    """PNG files + integer labels, served like a ``SplitDataset`` (same transform, same item keys)."""

    def __init__(
        self,
        files: Sequence[str | Path],
        labels: Sequence[int],
        transform: ImageTransform,
        image_size: int | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = [Path(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with Image.open(self.files[i]) as im:
            image = np.asarray(im.convert("RGB"))  # (S, S, 3) uint8, like a row of the image cache
        if self.image_size is not None and image.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.files[i]} is {image.shape[1]}x{image.shape[0]}, but the real images are "
                f"{self.image_size}x{self.image_size}: the samples come from another VQ-VAE / image size"
            )
        return {
            "image": self.transform(image),
            "label": torch.tensor(self.labels[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }
