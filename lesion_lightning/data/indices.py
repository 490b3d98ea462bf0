"""The derived code-index dataset written by `encode`, and its LightningDataModule.

Layout of an index dataset folder:
    manifest.json            grid size, codebook size, image size, preprocessing, splits, classes,
                             and the fingerprint of the VQ-VAE checkpoint that produced it
    {split}_indices.npy      uint16 (N, H, W) code grids, memory-mapped by every worker
    {split}_labels.npy       int64 (N,) class index into manifest["class_names"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lesion_lightning.utils.io import read_json_object

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class IndexManifest:
    """manifest.json of an index dataset, read once (its writer is `encode`); nobody else parses it."""

    root: Path
    grid_size: tuple[int, int]
    num_codes: int
    splits: dict[str, int]
    class_names: list[str]
    vqvae_checkpoint: str
    vqvae_fingerprint: str

    @classmethod
    def read(cls, root: str | Path, source: str = "data.root") -> IndexManifest:
        """`source` names the config key the folder came from, for the error messages."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{source}: {path} not found; pass an index dataset written by "
                "`python -m lesion_lightning.encode vqvae_ckpt=PATH` (its output folder holds manifest.json)"
            )
        manifest = read_json_object(path, "re-run encode to rewrite this index dataset")
        for key in ("grid_size", "num_codes", "splits", "class_names", "vqvae"):
            if key not in manifest:
                raise ValueError(f"{path} lacks `{key}`: re-run encode to rewrite this index dataset")
        try:
            vqvae = manifest["vqvae"]
            return cls(
                root=root,
                grid_size=(int(manifest["grid_size"][0]), int(manifest["grid_size"][1])),
                num_codes=int(manifest["num_codes"]),
                splits={str(k): int(v) for k, v in manifest["splits"].items()},
                class_names=[str(c) for c in manifest["class_names"]],
                vqvae_checkpoint=str(vqvae["checkpoint"]),
                vqvae_fingerprint=str(vqvae["fingerprint"]),
            )
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as err:
            raise ValueError(
                f"{path} is malformed ({type(err).__name__}: {err}); re-run encode to rewrite this index dataset"
            ) from err

    @staticmethod
    def present(root: str | Path | None) -> bool:
        """Whether `root` holds an index dataset's manifest (finished encode output)."""
        return bool(root) and (Path(root) / MANIFEST).is_file()

    def has_split(self, split: str) -> bool:
        return self.splits.get(split, 0) > 0

    def check_vqvae(self, fingerprint: str, vqvae: str = "the VQ-VAE checkpoint") -> None:
        """Refuse an index dataset encoded by another VQ-VAE than `vqvae` (whose fingerprint is given)."""
        if self.vqvae_fingerprint != fingerprint:
            raise ValueError(
                f"mismatched index dataset: {self.root} was encoded by VQ-VAE {self.vqvae_checkpoint}, "
                f"not {vqvae}; pass the matching index_dir (or VQ-VAE checkpoint)"
            )


class IndexDataset(Dataset):
    """Items: dict(indices=LongTensor (H, W), label=LongTensor (), index=LongTensor ())."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self._indices_path = self.root / f"{split}_indices.npy"
        self._indices: np.ndarray | None = None  # opened lazily: each worker maps its own view
        try:
            self.labels = np.load(self.root / f"{split}_labels.npy")
            shape = np.load(self._indices_path, mmap_mode="r").shape
        except (OSError, ValueError) as err:
            raise ValueError(
                f"index dataset {self.root}: the `{split}` split cannot be read ({type(err).__name__}: {err}); "
                f"the folder is incomplete or damaged, re-run encode to rewrite it"
            ) from err
        if len(shape) != 3 or shape[0] != len(self.labels):
            raise ValueError(
                f"index dataset {self.root}: {split}_indices.npy has shape {shape} but {len(self.labels)} labels; "
                f"re-run encode to rewrite it"
            )
        self._len = int(shape[0])

    @property
    def indices(self) -> np.ndarray:
        if self._indices is None:
            self._indices = np.load(self._indices_path, mmap_mode="r")
        return self._indices

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        grid = torch.from_numpy(self.indices[i].astype(np.int64))
        return {"indices": grid, "label": torch.tensor(int(self.labels[i])), "index": torch.tensor(i)}


class IndexDataModule(L.LightningDataModule):
    """`data=indices data.root=<encode output>`: batches of code grids (B, H, W) with labels."""

    def __init__(
        self, root: str, batch_size: int = 32, num_workers: int = 0, pin_memory: bool = False
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.manifest = IndexManifest.read(root)
        self.root = Path(root)
        self.datasets: dict[str, IndexDataset] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.manifest.grid_size

    def model_defaults(self) -> dict:
        """What a prior trained on this data must agree with (see utils.config.fill_model_from_data)."""
        n = len(self.class_names)
        return {
            "net": {
                "num_codes": self.manifest.num_codes,
                "num_classes": n if n > 1 else 0,
                "grid_size": list(self.grid_size),
            },
            "vqvae_ckpt": self.manifest.vqvae_checkpoint,
            "vqvae_fingerprint": self.manifest.vqvae_fingerprint,
            "class_names": self.class_names,
            "index_dataset": str(self.root.resolve()),  # absolute: evaluate may run from elsewhere
        }

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets and self.manifest.has_split(split):
                self.datasets[split] = IndexDataset(self.root, split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(
                f"the index dataset at {self.root} has no `{split}` split (manifest: {self.manifest.splits})"
            )
        h = self.hparams
        return DataLoader(
            self.datasets[split],
            batch_size=h.batch_size,
            shuffle=shuffle,
            num_workers=h.num_workers,
            pin_memory=h.pin_memory,
            persistent_workers=h.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
