"""DDP with 2 CPU processes (gloo) from the Hydra entry points, multirun x DDP, and bf16 mixed precision."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from clihelpers import TINY_VQVAE, run_cli

pytestmark = pytest.mark.slow
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4"]


def _ckpts(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("*.ckpt"))


def test_ddp_trains_vqvae_and_pixelcnn_in_one_run_dir(tmp_path: Path) -> None:
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart",
        *TINY_VQVAE,
        *DDP,
        "logger=csv",
        "hydra.run.dir=vq",
        cwd=tmp_path,
    )
    vq = tmp_path / "vq"
    assert (vq / "checkpoints" / "last.ckpt").is_file() and len(_ckpts(vq)) == 2
    assert (vq / "train_ddp_process_1.log").is_file(), "rank 1 ran in the same run directory"
    assert not (tmp_path / "logs").exists(), "no rank started a run of its own elsewhere"
    run_cli(
        "lesion_lightning.encode",
        f"vqvae_ckpt={vq / 'checkpoints' / 'last.ckpt'}",
        "hydra.run.dir=enc",
        cwd=tmp_path,
    )
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart_pixelcnn",
        f"data.root={tmp_path / 'enc' / 'indices'}",
        "model.net.channels=8",
        "model.net.num_layers=2",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        *DDP,
        "hydra.run.dir=px",
        cwd=tmp_path,
    )
    assert (tmp_path / "px" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "logs").exists()


def test_multirun_with_ddp_gives_each_job_its_ranks_and_wandb_run(tmp_path: Path) -> None:
    run_cli(
        "lesion_lightning.train",
        "-m",
        "experiment=quickstart",
        *TINY_VQVAE,
        *DDP,
        "model.net.codebook_size=8,16",
        "logger=wandb",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        run = tmp_path / "sweep" / job
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1, "one W&B run per sweep job"
    assert not (tmp_path / "logs").exists()


def test_bf16_mixed_precision_trains_on_cpu(tmp_path: Path) -> None:
    run_cli(
        "lesion_lightning.train",
        "experiment=quickstart",
        *TINY_VQVAE,
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=2",
        "logger=csv",
        "hydra.run.dir=bf16",
        cwd=tmp_path,
    )
    rows = list(csv.DictReader(open(next((tmp_path / "bf16" / "csv").rglob("metrics.csv")))))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert losses and all(math.isfinite(v) for v in losses)
    psnr = [float(r["val/psnr"]) for r in rows if r.get("val/psnr")]
    assert psnr and all(math.isfinite(v) for v in psnr)
    assert (tmp_path / "bf16" / "checkpoints" / "last.ckpt").is_file()
