"""Stage 1 through the real CLI: configs compose, a tiny run leaves checkpoints, images and W&B files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from clihelpers import CONF, TINY_VQVAE, compose_config, run_cli

from lesion_lightning.modules.checkpoints import VQVAECheckpoint, load_vqvae

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.model._target_.startswith("lesion_lightning.modules.")
    assert cfg.task_name != "train", "an experiment names its own run folder"
    assert "grid" not in cfg, "the grid is derived (num_downsamples, the index dataset), never a config key"
    if experiment.startswith("vqvae_"):
        grid = int(experiment.split("_")[1])
        assert cfg.data.image_size == 256
        assert cfg.data.image_size // 2**cfg.model.net.num_downsamples == grid
    if experiment.startswith("pixelcnn_"):
        assert cfg.data._target_.endswith("IndexDataModule")


@pytest.mark.parametrize(("experiment", "grid"), [("vqvae_32", 32), ("vqvae_64", 64), ("vqvae_128", 128)])
def test_vqvae_experiment_grid_shapes(experiment: str, grid: int, tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        [
            f"experiment={experiment}",
            "model.net.hidden_channels=8",
            "model.net.res_channels=4",
            "model.net.num_res_blocks=1",
            "model.net.codebook_size=8",
            "model.net.code_dim=4",
        ],
        tmp_path,
    )
    module = hydra.utils.instantiate(cfg.model)
    with torch.no_grad():
        out = module.net(torch.rand(1, 3, 256, 256))
    assert out.indices.shape == (1, grid, grid)
    assert out.recon.shape == (1, 3, 256, 256)


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("train_cli")
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart",
        *TINY_VQVAE,
        "trainer.max_epochs=2",
        "hydra.run.dir=run",
        cwd=cwd,
    )
    return cwd / "run"


@pytest.mark.slow
def test_train_cli_leaves_checkpoints_images_and_offline_wandb(vqvae_run: Path) -> None:
    ckpts = vqvae_run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    assert list(ckpts.glob("best-*.ckpt")), "best checkpoint by val/loss"
    assert list((vqvae_run / "images").glob("reconstructions_epoch*.png"))
    offline = list((vqvae_run / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb")), "an offline W&B run directory with its data"
    records = next(offline[0].glob("*.wandb")).read_bytes()
    assert b"model-" in records and b'"monitor": "val/loss"' in records.replace(b'":"', b'": "'), (
        "the best checkpoint is logged as a W&B model artifact (offline, for `wandb sync`)"
    )
    assert list((offline[0] / "files" / "media" / "images").rglob("reconstructions_*.png"))
    assert (vqvae_run / "config_resolved.yaml").is_file()
    # the checkpoint is self-describing: it rebuilds the model and the data settings
    module = load_vqvae(ckpts / "last.ckpt")
    assert module.net.latent_shape(32) == (8, 8)
    assert VQVAECheckpoint(ckpts / "last.ckpt").datamodule_settings["image_size"] == 32


@pytest.mark.slow
def test_train_resumes_from_last_checkpoint(vqvae_run: Path) -> None:
    last = vqvae_run / "checkpoints" / "last.ckpt"
    step_before = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart",
        *TINY_VQVAE,
        "trainer.max_epochs=3",
        f"ckpt_path={last}",
        "test=false",
        "logger=csv",
        "hydra.run.dir=run_resumed",
        cwd=vqvae_run.parent,
    )
    resumed = torch.load(
        vqvae_run.parent / "run_resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert resumed["epoch"] == 2
    assert resumed["global_step"] > step_before


def test_missing_isic_root_says_how_to_get_data(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesion_lightning.train",
            "experiment=vqvae_32",
            f"data.root={tmp_path / 'nope'}",
            "logger=csv",
            "trainer=cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert str(tmp_path / "nope") in err
    assert "isic" in err.lower() and "data=synthetic" in err
