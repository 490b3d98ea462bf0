"""Generated lesions as a labelled dataset, mixable with real images of a ``LesionDataModule`` split.

``samples.sample_to_folder`` writes ``sample_0000.png ...`` and ``samples.json`` whose ``labels`` list
holds each sample's class name (conditional priors). :class:`SamplesFolder` reads that back,
and :class:`GeneratedImages` serves the PNGs exactly like ``SplitDataset`` serves cached real images:
uint8 HWC -> the same albumentations augmentation (training only) -> the same normalisation, as
``{"image", "label", "index"}`` dicts, so ``ConcatDataset([real, generated])`` batches them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lesion_lightning.data.transforms import ImageTransform
from lesion_lightning.utils.io import read_json_object

SAMPLES_JSON = "samples.json"


@dataclass(frozen=True)
class LabelledSamples:
    """Sample files (absolute paths) with their class names, as recorded in ``samples.json``."""

    files: list[Path]
    labels: list[str]

    def of_class(self, name: str) -> list[Path]:
        return [f for f, label in zip(self.files, self.labels, strict=True) if label == name]


@dataclass(frozen=True)
class SamplesFolder:
    """A ``samples.sample_to_folder`` output folder read through its ``samples.json`` (the one reader:
    nobody else parses its keys)."""

    root: Path
    files: list[Path]  # absolute, in sample order
    labels: list[str | None]  # class name per sample (None: unconditional)
    label_indices: list[int] | None
    vqvae_fingerprint: str | None
    pixelcnn_ckpt: str | None
    settings: dict
    seconds_per_image: float | None

    @staticmethod
    def present(root: str | Path | None) -> bool:
        return bool(root) and (Path(root) / SAMPLES_JSON).is_file()

    @classmethod
    def read(cls, root: str | Path, source: str = "samples_dir") -> SamplesFolder:
        """Raises a clear error when the folder, its ``samples.json`` or a listed file is missing."""
        root = Path(root)
        path = root / SAMPLES_JSON
        if not path.is_file():
            raise FileNotFoundError(
                f"{source}={root} holds no {SAMPLES_JSON}; pass the `samples` folder written by "
                "`python -m lesion_lightning.sample` (or samples_dir=null to generate samples)"
            )
        meta = read_json_object(path, "re-run the sample stage")
        files, labels = meta.get("files") or [], meta.get("labels") or []
        if len(files) != len(labels):
            raise ValueError(f"{path}: {len(files)} files but {len(labels)} labels; re-run the sample stage")
        indices = meta.get("label_indices")
        if indices is not None and len(indices) != len(files):
            raise ValueError(f"{path} records {len(indices)} labels for {len(files)} sample files")
        paths = [root / f for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists files that do not exist: {missing[:5]}")
        seconds = meta.get("seconds_per_image")
        return cls(
            root=root,
            files=paths,
            labels=list(labels),
            label_indices=[int(i) for i in indices] if indices is not None else None,
            vqvae_fingerprint=meta.get("vqvae_fingerprint"),
            pixelcnn_ckpt=meta.get("pixelcnn_ckpt"),
            settings=dict(meta.get("settings") or {}),
            seconds_per_image=float(seconds) if isinstance(seconds, int | float) else None,
        )

    def check_vqvae(self, fingerprint: str, vqvae: str = "the VQ-VAE checkpoint") -> None:
        """Refuse samples decoded by another VQ-VAE than `vqvae` (older folders record none: accepted)."""
        if self.vqvae_fingerprint and self.vqvae_fingerprint != fingerprint:
            raise ValueError(
                f"mismatched samples: {self.root} was decoded by another VQ-VAE than {vqvae} "
                f"(see its {SAMPLES_JSON}); pass the matching pair"
            )

    def class_indices(self, class_names: list[str]) -> np.ndarray | None:
        """The class index each sample was drawn for, or None for unconditional samples."""
        indices = self.label_indices
        if indices is None:
            if not self.labels or any(n is None for n in self.labels):
                return None
            unknown = sorted({n for n in self.labels if n not in class_names})
            if unknown:
                raise ValueError(
                    f"{self.root / SAMPLES_JSON}: labels {unknown} are not classes of the evaluated data {class_names}"
                )
            indices = [class_names.index(n) for n in self.labels]
        return np.asarray(indices, dtype=np.int64)

    def labelled(self) -> LabelledSamples:
        """The samples with their class names; an unconditional prior's samples are refused."""
        if any(label is None for label in self.labels):
            raise ValueError(
                f"{self.root / SAMPLES_JSON}: the samples carry no class labels (an unconditional prior); the "
                "utility stage needs a class-conditional PixelCNN (model.net.num_classes > 0)"
            )
        return LabelledSamples(list(self.files), [str(label) for label in self.labels])


def read_labelled_samples(samples_dir: str | Path) -> LabelledSamples:
    """The labelled samples of a sample folder (see `SamplesFolder.read` and `.labelled`)."""
    return SamplesFolder.read(samples_dir).labelled()


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
