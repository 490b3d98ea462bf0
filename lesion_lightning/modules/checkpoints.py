"""Stage checkpoints: each file read once, what it records through typed accessors, its module rebuilt.

A checkpoint describes itself (nanoGPT-style): the LightningModule's hyper-parameters are primitives,
the data settings sit under `datamodule_hyper_parameters` (LightningDataModule.save_hyperparameters),
the split the datamodule used under its state_dict (`LesionDataModule`: split_digest, split_file), and
`lesion_lightning.module` names the stage. Entry points open a checkpoint once and ask it; no other
module reads checkpoint keys.

    vqvae = VQVAECheckpoint(cfg.vqvae_ckpt)          # reads + hashes the file
    prior = PriorCheckpoint(cfg.pixelcnn_ckpt)
    prior.check_pair(vqvae)                           # same VQ-VAE that encoded the prior's data?
    net = prior.load_module(device).net
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import lightning as L
import torch

from lesion_lightning.modules.classifier_module import ClassifierModule
from lesion_lightning.modules.pixelcnn_module import PixelCNNModule
from lesion_lightning.modules.vqvae_module import VQVAEModule

# the key under which Lightning stores a LightningDataModule's state_dict is its class name
DATAMODULE_STATE_KEY = "LesionDataModule"


def fingerprint(path: str | Path) -> str:
    """sha256 of a checkpoint file: identifies exactly which VQ-VAE produced an index dataset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


ModuleT = TypeVar("ModuleT", bound=L.LightningModule)


class StageCheckpoint(Generic[ModuleT]):
    """One stage's checkpoint file, read and hashed once; subclasses name the stage and its accessors."""

    module_class: ClassVar[type[L.LightningModule]]
    default_key: ClassVar[str]

    def __init__(self, path: str | Path, key: str | None = None) -> None:
        self.key = key or self.default_key
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.key}={path}: no such checkpoint file (look in <run dir>/checkpoints/)"
            )
        self._bytes = self.path.read_bytes()
        self.fingerprint: str = hashlib.sha256(self._bytes).hexdigest()
        try:
            self._ckpt: dict = torch.load(io.BytesIO(self._bytes), map_location="cpu", weights_only=True)
        except Exception as err:  # truncated download, wrong file, ...
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(
                f"{self.key}={path} is not a readable Lightning checkpoint ({type(err).__name__}: "
                f"{first_line}); pass a .ckpt from <run dir>/checkpoints/"
            ) from err
        kind = (self._ckpt.get("lesion_lightning") or {}).get("module")
        expected = self.module_class.__name__
        if kind != expected:
            raise ValueError(
                f"{self.key}={path} is a {kind or 'non-lesion_lightning'} checkpoint, expected a {expected} one"
            )
        self._hparams: dict[str, Any] = dict(self._ckpt.get("hyper_parameters") or {})

    def load_module(self, device: str | torch.device = "cpu") -> ModuleT:
        """The LightningModule, in eval mode on `device` (rebuilt from the bytes already read)."""
        module = self.module_class.load_from_checkpoint(io.BytesIO(self._bytes), map_location=device)
        return module.eval()

    # ------------------------------------------------------------------ data the stage was trained on
    @property
    def datamodule_settings(self) -> dict[str, Any]:
        """The data config the stage was trained with; a clear error when the checkpoint lacks it."""
        hp = self._ckpt.get("datamodule_hyper_parameters")
        if not hp:
            raise ValueError(
                f"{self.key}={self.path} does not record its data configuration; pass the data settings explicitly"
            )
        return dict(hp)

    @property
    def split_digest(self) -> str | None:
        """Digest of the train/val/test assignment the datamodule used (None in older checkpoints)."""
        return (self._ckpt.get(DATAMODULE_STATE_KEY) or {}).get("split_digest")

    @property
    def split_file(self) -> str | None:
        """The split file the datamodule used (None in older checkpoints)."""
        return (self._ckpt.get(DATAMODULE_STATE_KEY) or {}).get("split_file")

    @property
    def pinned_split(self) -> dict[str, str]:
        """``{"split_file", "split_digest"}`` the datamodule recorded (``{}`` in older checkpoints)."""
        if not self.split_file:
            return {}
        return {"split_file": str(self.split_file), "split_digest": str(self.split_digest or "")}


class VQVAECheckpoint(StageCheckpoint[VQVAEModule]):
    module_class = VQVAEModule
    default_key = "vqvae_ckpt"

    @property
    def net_settings(self) -> dict[str, Any]:
        return dict(self._hparams["net"])

    def build_datamodule(self, overrides: dict | None = None):
        """The LesionDataModule the VQ-VAE was trained with (same root, preprocessing and split), set up."""
        from lesion_lightning.data.datamodule import LesionDataModule

        hp = self.datamodule_settings
        if self.split_file:  # the split the VQ-VAE was trained on, not a new one from the files on disk
            hp.update(split_file=self.split_file, split_digest=self.split_digest or "")
        hp.update({k: v for k, v in (overrides or {}).items() if v is not None})
        dm = LesionDataModule(**hp)
        dm.prepare_data()
        dm.setup("fit")
        return dm


class PriorCheckpoint(StageCheckpoint[PixelCNNModule]):
    """A PixelCNN prior; it records the VQ-VAE that encoded its training data and the grids it models."""

    module_class = PixelCNNModule
    default_key = "pixelcnn_ckpt"

    @property
    def grid_size(self) -> tuple[int, int]:
        grid = self._hparams["net"].get("grid_size")
        if not grid:
            raise ValueError(f"{self.key}={self.path} records no grid size; retrain it with data=indices")
        return int(grid[0]), int(grid[1])

    @property
    def num_codes(self) -> int:
        return int(self._hparams["net"]["num_codes"])

    @property
    def class_names(self) -> list[str]:
        return list(self._hparams.get("class_names") or [])

    @property
    def vqvae_path(self) -> str | None:
        """The VQ-VAE checkpoint recorded when the prior was trained (may have moved since)."""
        return self._hparams.get("vqvae_ckpt")

    @property
    def vqvae_fingerprint(self) -> str | None:
        return self._hparams.get("vqvae_fingerprint")

    @property
    def index_dataset(self) -> str | None:
        return self._hparams.get("index_dataset")

    def check_pair(self, vqvae: VQVAECheckpoint) -> None:
        """Refuse a VQ-VAE other than the one whose codes the prior was trained on."""
        expected = self.vqvae_fingerprint
        if not expected:
            raise ValueError(
                "this PixelCNN checkpoint records no VQ-VAE fingerprint (it was not trained with data=indices on "
                "an encode output), so its codes cannot be matched to a VQ-VAE; retrain it on an index dataset"
            )
        if expected != vqvae.fingerprint:
            raise ValueError(
                f"mismatched checkpoints: the PixelCNN was trained on indices from VQ-VAE "
                f"{self.vqvae_path} (sha256 {expected[:12]}...), but vqvae_ckpt={vqvae.path} "
                f"has sha256 {vqvae.fingerprint[:12]}.... Pass the VQ-VAE checkpoint that encoded the prior's "
                "training data."
            )

    def paired_vqvae(self, vqvae_ckpt: str | Path | None = None) -> VQVAECheckpoint:
        """The VQ-VAE to decode/encode with: `vqvae_ckpt`, else the one recorded at training; pair checked."""
        path = vqvae_ckpt or self.vqvae_path
        if not path:
            raise ValueError(
                "vqvae_ckpt is not set and the PixelCNN checkpoint records none; pass vqvae_ckpt=PATH"
            )
        vqvae = VQVAECheckpoint(path)
        self.check_pair(vqvae)
        return vqvae


# ---------------------------------------------------------------------------- one-call shortcuts
class ClassifierCheckpoint(StageCheckpoint[ClassifierModule]):
    """A downstream classifier (the utility stage's arm-(1) ones: <utility out>/classifiers/)."""

    module_class = ClassifierModule
    default_key = "classifier_ckpt"

    @property
    def class_names(self) -> list[str]:
        """The column order of its probabilities."""
        return list(self._hparams["class_names"])

    def load_module(self, device: str | torch.device = "cpu") -> ClassifierModule:
        """In eval mode; never re-reads the ImageNet weights it may have started from."""
        module = ClassifierModule.load_from_checkpoint(
            io.BytesIO(self._bytes), map_location=device, pretrained_weights=None
        )
        return module.eval()


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> ClassifierModule:
    """A trained ClassifierModule from its checkpoint, in eval mode."""
    return ClassifierCheckpoint(path).load_module(device)


def load_vqvae(path: str | Path, device: str | torch.device = "cpu", key: str = "vqvae_ckpt") -> VQVAEModule:
    """VQVAEModule from a Lightning checkpoint, in eval mode; clear error for the wrong kind."""
    return VQVAECheckpoint(path, key).load_module(device)


def load_pixelcnn(
    path: str | Path, device: str | torch.device = "cpu", key: str = "pixelcnn_ckpt"
) -> PixelCNNModule:
    return PriorCheckpoint(path, key).load_module(device)


def build_datamodule(vqvae_ckpt: str | Path | VQVAECheckpoint, overrides: dict | None = None):
    """The LesionDataModule a VQ-VAE checkpoint was trained with (same root, preprocessing and split)."""
    ckpt = vqvae_ckpt if isinstance(vqvae_ckpt, VQVAECheckpoint) else VQVAECheckpoint(vqvae_ckpt)
    return ckpt.build_datamodule(overrides)
