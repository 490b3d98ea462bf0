"""pytest configuration and shared fixtures; the helpers live in clihelpers.py (importable by test modules)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelpers import CHAIN_NUM_SAMPLES, TINY_PIXELCNN, TINY_VQVAE, run_cli


@pytest.fixture(scope="session")
def chain(tmp_path_factory) -> dict[str, Path]:
    """VQ-VAE -> encode -> PixelCNN -> samples through the real CLIs with tiny settings, made once per
    session and shared by the stage-2 and evaluate tests (read-only: tests write their own folders)."""
    root = tmp_path_factory.mktemp("chain")
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart",
        *TINY_VQVAE,
        "logger=csv",
        "hydra.run.dir=vqvae",
        cwd=root,
    )
    vqvae = root / "vqvae" / "checkpoints" / "last.ckpt"
    run_cli("lesion_lightning.encode", f"vqvae_ckpt={vqvae}", "hydra.run.dir=encode", cwd=root)
    indices = root / "encode" / "indices"
    run_cli(
        "lesion_lightning.train", *TINY_PIXELCNN, f"data.root={indices}", "hydra.run.dir=pixelcnn", cwd=root
    )
    pixelcnn = root / "pixelcnn" / "checkpoints" / "last.ckpt"
    run_cli(
        "lesion_lightning.sample",
        f"pixelcnn_ckpt={pixelcnn}",
        f"num_samples={CHAIN_NUM_SAMPLES}",
        "hydra.run.dir=sample",
        cwd=root,
    )
    return {
        "root": root,
        "vqvae": vqvae,
        "indices": indices,
        "pixelcnn": pixelcnn,
        "pixelcnn_run": root / "pixelcnn",
        "samples": root / "sample" / "samples",
    }
