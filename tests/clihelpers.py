"""Shared test helpers: compose the real configs, shrunk to CPU, tiny images and a tmp output dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose like `python -m lesion_lightning.<config_name> ...` would, with Hydra's runtime set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def run_cli(module: str, *overrides: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an entry point as a user would; fail with its output when it exits non-zero."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{module} {' '.join(overrides)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


# tiny-but-real settings shared by the CLI tests
TINY_VQVAE = [
    "data=synthetic",
    "data.image_size=32",
    "data.synthetic.num_images=24",
    "data.batch_size=8",
    "data.num_workers=0",
    "model.net.hidden_channels=16",
    "model.net.res_channels=8",
    "model.net.num_res_blocks=1",
    "model.net.codebook_size=16",
    "model.net.code_dim=8",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
]
TINY_PIXELCNN = [
    "experiment=quickstart_pixelcnn",
    "model.net.channels=8",
    "model.net.num_layers=2",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "callbacks.rich_progress_bar=null",
    "logger=csv",
    "data.batch_size=8",
    "model.num_log_samples=2",
    # the "no class" label, so guided sampling and its CLI run on the shared chain
    "model.cond_dropout=0.1",
]
# samples the shared `chain` fixture draws
CHAIN_NUM_SAMPLES = 6


def offline_ids(run: Path) -> list[str]:
    """The W&B run ids of a run folder's offline runs, one per attempt.

    Folders are offline-run-<date>_<time>-<id>, with "-<k>" appended by wandb when two attempts of one
    run start in the same second."""
    names = (p.name for p in (Path(run) / "wandb").glob("offline-run-*"))
    return sorted(re.fullmatch(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)(?:-\d+)?", n).group(1) for n in names)
