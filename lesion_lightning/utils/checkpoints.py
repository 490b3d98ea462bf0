"""Loading stage checkpoints and checking that a VQ-VAE and a PixelCNN belong together."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


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


def _require_file(path: str | Path, key: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{key}={path}: no such checkpoint file (look in <run dir>/checkpoints/)")
    return p


def load_vqvae(path: str | Path, device: str | torch.device = "cpu", key: str = "vqvae_ckpt"):
    """VQVAEModule from a Lightning checkpoint, in eval mode; clear error for the wrong kind."""
    from lesion_lightning.modules.vqvae_module import VQVAEModule

    p = _require_file(path, key)
    _check_kind(p, "VQVAEModule", key)
    return VQVAEModule.load_from_checkpoint(p, map_location=device).eval()


def load_pixelcnn(path: str | Path, device: str | torch.device = "cpu", key: str = "pixelcnn_ckpt"):
    from lesion_lightning.modules.pixelcnn_module import PixelCNNModule

    p = _require_file(path, key)
    _check_kind(p, "PixelCNNModule", key)
    return PixelCNNModule.load_from_checkpoint(p, map_location=device).eval()


def _read(path: Path, key: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated download, wrong file, ...
        raise ValueError(
            f"{key}={path} is not a readable Lightning checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); pass a .ckpt from <run dir>/checkpoints/"
        ) from err


def _check_kind(path: Path, expected: str, key: str) -> None:
    ckpt = _read(path, key)
    kind = ckpt.get("lesion_lightning", {}).get("module")
    if kind != expected:
        raise ValueError(
            f"{key}={path} is a {kind or 'non-lesion_lightning'} checkpoint, expected a {expected} one"
        )


def datamodule_hparams(path: str | Path) -> dict:
    """The data config a checkpoint was trained with (LightningDataModule.save_hyperparameters)."""
    ckpt = _read(Path(path), "vqvae_ckpt")
    hp = ckpt.get("datamodule_hyper_parameters")
    if not hp:
        raise ValueError(f"{path} does not record its data configuration; pass the data settings explicitly")
    return dict(hp)


def check_pair(pixelcnn, vqvae_path: str | Path) -> None:
    """Refuse a PixelCNN whose index dataset came from another VQ-VAE checkpoint."""
    expected = pixelcnn.hparams.get("vqvae_fingerprint")
    if not expected:
        raise ValueError(
            "this PixelCNN checkpoint records no VQ-VAE fingerprint (it was not trained with data=indices on an "
            "encode output), so its codes cannot be matched to a VQ-VAE; retrain it on an index dataset"
        )
    actual = fingerprint(vqvae_path)
    if expected != actual:
        raise ValueError(
            f"mismatched checkpoints: the PixelCNN was trained on indices from VQ-VAE "
            f"{pixelcnn.hparams.get('vqvae_ckpt')} (sha256 {expected[:12]}...), but vqvae_ckpt={vqvae_path} "
            f"has sha256 {actual[:12]}.... Pass the VQ-VAE checkpoint that encoded the prior's training data."
        )
