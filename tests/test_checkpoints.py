"""Stage checkpoints through `modules.checkpoints`: typed accessors, one read per file, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesion_lightning.data.indices import IndexManifest
from lesion_lightning.modules.checkpoints import (
    PriorCheckpoint,
    VQVAECheckpoint,
    fingerprint,
)


def test_prior_accessors_match_what_training_recorded(chain) -> None:
    manifest = IndexManifest.read(chain["indices"])
    prior = PriorCheckpoint(chain["pixelcnn"])
    vqvae = VQVAECheckpoint(chain["vqvae"])
    assert prior.grid_size == manifest.grid_size
    assert prior.num_codes == manifest.num_codes
    assert prior.class_names == manifest.class_names
    assert prior.vqvae_fingerprint == vqvae.fingerprint == fingerprint(chain["vqvae"])
    assert Path(prior.index_dataset) == chain["indices"].resolve()
    prior.check_pair(vqvae)
    module = prior.load_module()
    assert not module.training and tuple(module.net.grid_size) == prior.grid_size


def test_each_file_is_read_once(chain, monkeypatch) -> None:
    reads: list[Path] = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or original(self))
    vqvae = VQVAECheckpoint(chain["vqvae"])
    vqvae.load_module()
    assert vqvae.datamodule_settings["image_size"] == 32 and vqvae.net_settings["codebook_size"] > 0
    assert reads == [chain["vqvae"]]


def test_split_accessors_read_the_datamodule_state(chain, tmp_path) -> None:
    ckpt = torch.load(chain["vqvae"], map_location="cpu", weights_only=True)
    ckpt.pop("LesionDataModule", None)
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    assert VQVAECheckpoint(old).split_digest is None and VQVAECheckpoint(old).split_file is None
    ckpt["LesionDataModule"] = {"split_digest": "abc123", "split_file": "/data/splits.csv"}
    new = tmp_path / "new.ckpt"
    torch.save(ckpt, new)
    assert VQVAECheckpoint(new).split_digest == "abc123"
    assert VQVAECheckpoint(new).split_file == "/data/splits.csv"


def test_clear_errors_for_the_wrong_file(chain, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="vqvae_ckpt=.*no such checkpoint"):
        VQVAECheckpoint(tmp_path / "nope.ckpt")
    with pytest.raises(ValueError, match="is a PixelCNNModule checkpoint, expected a VQVAEModule"):
        VQVAECheckpoint(chain["pixelcnn"])
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(chain["vqvae"].read_bytes()[:100])
    with pytest.raises(ValueError, match="pixelcnn_ckpt=.*not a readable Lightning checkpoint"):
        PriorCheckpoint(broken)
    ckpt = torch.load(chain["pixelcnn"], map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["vqvae_fingerprint"] = "0" * 64
    other = tmp_path / "other_prior.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(ValueError, match="mismatched checkpoints"):
        PriorCheckpoint(other).check_pair(VQVAECheckpoint(chain["vqvae"]))
