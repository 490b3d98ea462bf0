"""Stage 2 through the real CLIs: encode -> index dataset -> PixelCNN -> sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelpers import run_cli
from PIL import Image

from lesion_lightning.data.indices import IndexDataModule, IndexManifest
from lesion_lightning.modules.checkpoints import build_datamodule, load_vqvae

pytestmark = pytest.mark.slow


def test_index_dataset_layout_and_manifest(chain) -> None:
    manifest = IndexManifest.read(chain["indices"])
    assert manifest.grid_size == (8, 8) and manifest.num_codes == 16
    assert set(manifest.class_names) == {"melanoma", "nevus"}
    assert len(manifest.vqvae_fingerprint) == 64
    for split, n in manifest.splits.items():
        grids = np.load(chain["indices"] / f"{split}_indices.npy", mmap_mode="r")
        assert grids.dtype == np.uint16 and grids.shape == (n, 8, 8)
        assert int(grids.max()) < 16
    assert sum(manifest.splits.values()) == 24
    dm = IndexDataModule(str(chain["indices"]), batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["indices"].shape[1:] == (8, 8) and batch["indices"].dtype == torch.long
    assert dm.model_defaults()["net"] == {"num_codes": 16, "num_classes": 2, "grid_size": [8, 8]}


def test_encode_then_decode_equals_vqvae_reconstruction(chain) -> None:
    vqvae = load_vqvae(chain["vqvae"])
    dm = build_datamodule(chain["vqvae"])
    test_set = dm.split_dataset("test")
    images = torch.stack([test_set[i]["image"] for i in range(len(test_set))])
    grids = torch.from_numpy(np.load(chain["indices"] / "test_indices.npy").astype(np.int64))
    with torch.no_grad():
        decoded = vqvae.net.decode_indices(grids)
        recon = vqvae.net(images).recon
    torch.testing.assert_close(decoded, recon, rtol=0, atol=0)


def test_sample_writes_pngs_and_is_reproducible(chain) -> None:
    cwd = chain["root"]
    args = [f"pixelcnn_ckpt={chain['pixelcnn']}", "num_samples=3", "batch_size=2", "seed=7", "label=melanoma"]
    run_cli("lesion_lightning.sample", *args, "hydra.run.dir=s1", cwd=cwd)
    # another batch size: sample n is the same image however the samples are batched
    run_cli(
        "lesion_lightning.sample",
        *[a.replace("batch_size=2", "batch_size=3") for a in args],
        "hydra.run.dir=s2",
        cwd=cwd,
    )
    out1, out2 = cwd / "s1" / "samples", cwd / "s2" / "samples"
    files = sorted(out1.glob("sample_*.png"))
    assert len(files) == 3 and (out1 / "grid.png").is_file()
    for f in files:
        img = Image.open(f)
        assert img.size == (32, 32) and img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(out2 / f.name)))
    meta = json.loads((out1 / "samples.json").read_text())
    assert meta["labels"] == ["melanoma"] * 3 and meta["grid_size"] == [8, 8]
    assert meta["seconds_per_image"] > 0


def test_samples_record_labels_from_the_train_mix_and_their_code_grids(chain) -> None:
    out = chain["samples"]
    meta = json.loads((out / "samples.json").read_text())
    train_labels = np.load(chain["indices"] / "train_labels.npy")
    names = json.loads((chain["indices"] / "manifest.json").read_text())["class_names"]
    assert meta["label_distribution"] == "train"
    freq = np.bincount(train_labels, minlength=len(names)) / len(train_labels)
    assert meta["class_probabilities"] == pytest.approx(dict(zip(names, freq, strict=True)))
    assert [names[i] for i in meta["label_indices"]] == meta["labels"]
    grids = np.load(out / meta["indices"])
    assert grids.dtype == np.uint16 and grids.shape == (len(meta["files"]), *meta["grid_size"])
    # the saved grids are the ones decoded into the PNGs
    vqvae = load_vqvae(chain["vqvae"])
    with torch.no_grad():
        decoded = vqvae.net.decode_indices(torch.from_numpy(grids.astype(np.int64))).clamp(0, 1)
    png = np.asarray(Image.open(out / meta["files"][0]), dtype=np.float64) / 255
    np.testing.assert_allclose(png, decoded[0].permute(1, 2, 0).numpy(), atol=1 / 255)


def _sample_fails(cwd: Path, *overrides: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "lesion_lightning.sample", *overrides, "hydra.run.dir=bad"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert not (cwd / "bad" / "samples").exists(), "nothing half-written"
    return proc.stderr + proc.stdout


def test_sample_refuses_mismatched_vqvae(chain) -> None:
    other = next((chain["vqvae"].parent).glob("best-*.ckpt"))
    assert other.read_bytes() != chain["vqvae"].read_bytes()
    err = _sample_fails(chain["root"], f"pixelcnn_ckpt={chain['pixelcnn']}", f"vqvae_ckpt={other}")
    assert "mismatched checkpoints" in err and str(other) in err


def test_sample_rejects_unknown_label_and_wrong_checkpoint_kind(chain) -> None:
    err = _sample_fails(chain["root"], f"pixelcnn_ckpt={chain['pixelcnn']}", "label=dermatofibroma")
    assert "dermatofibroma" in err and "melanoma" in err
    err = _sample_fails(chain["root"], f"pixelcnn_ckpt={chain['vqvae']}")
    assert "VQVAEModule" in err and "PixelCNNModule" in err


def test_auto_batch_size_is_bounded_by_request_and_memory(chain) -> None:
    from lesion_lightning.models.sampling import MAX_AUTO_BATCH, auto_batch_size
    from lesion_lightning.modules.checkpoints import load_pixelcnn

    net = load_pixelcnn(chain["pixelcnn"]).net
    assert auto_batch_size(net, 8, 8, 5, torch.device("cpu")) == 5
    assert auto_batch_size(net, 8, 8, 10_000, torch.device("cpu")) == MAX_AUTO_BATCH
