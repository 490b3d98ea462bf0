"""Preemption costs a step, not an epoch: SIGTERM/SIGUSR1 -> last.ckpt at that step -> resume finishes
the same max_steps in the same W&B run.

Watched failing on the code before: the process exited 0 with no checkpoint of the interrupted epoch
(SIGUSR1 killed it outright), and the resumed run started a second W&B run id.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from clihelpers import TINY_VQVAE, compose_config, offline_ids
from omegaconf import open_dict

from lesion_lightning.train import train

# 64 synthetic images, batch 4: several steps per epoch, so a signal can land late in one
SMALL = [
    "experiment=quickstart",
    *TINY_VQVAE,
    "data.synthetic.num_images=64",
    "data.batch_size=4",
    "callbacks.image_logger=null",
    "test=false",
]


class SignalAt(L.Callback):
    """Sends this process `signum` after training step `step`, as scancel / SLURM would from outside."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def steps_per_epoch(tmp_path: Path) -> int:
    cfg = compose_config("train", [*SMALL, "logger=csv", "trainer.max_steps=1"], tmp_path / "probe")
    _, objects = train(cfg)
    return objects["trainer"].num_training_batches


def compose(tmp_path: Path, run: Path, extra: list[str]):
    return compose_config("train", [*SMALL, "trainer.max_epochs=100", *extra], run)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_signal_late_in_an_epoch_saves_that_step_and_resume_finishes_in_the_same_wandb_run(
    signame: str, tmp_path: Path
) -> None:
    per_epoch = steps_per_epoch(tmp_path)
    assert per_epoch >= 6, f"the test needs several steps per epoch, got {per_epoch}"
    at = per_epoch + per_epoch - 2  # late in the second epoch
    total = 3 * per_epoch
    run = tmp_path / "run"
    signum = getattr(signal, signame)
    cfg = compose(tmp_path, run, ["logger=wandb", f"trainer.max_steps={total}"])
    with open_dict(cfg):
        cfg.callbacks.signal_at = {"_target_": f"{__name__}.SignalAt", "step": at, "signum": int(signum)}
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == 128 + signum, "exits with the signal's status, so a scheduler sees the cut"
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert abs(state["global_step"] - at) <= 2, (state["global_step"], at)
    assert state["epoch"] == 1, "saved inside the interrupted epoch, not at its end"
    if signame == "SIGUSR1":
        return  # resuming is the same path as after SIGTERM

    # resume in the same run folder; Lightning's ckpt_path=last finds checkpoints/last.ckpt
    cfg2 = compose(tmp_path, run, ["logger=wandb", f"trainer.max_steps={total}", "ckpt_path=last"])
    _, objects = train(cfg2)
    trainer = objects["trainer"]
    assert trainer.global_step == total, "the resumed run ends at the same total max_steps"
    assert trainer.current_epoch >= 2

    run_id = (run / "wandb_run_id").read_text().strip()
    ids = offline_ids(run)
    assert ids == [run_id, run_id], f"both attempts log into W&B run {run_id} (wandb sync merges them): {ids}"


def test_interval_checkpoint_is_configured_to_ten_minutes(tmp_path: Path) -> None:
    import datetime

    import hydra

    cfg = compose_config("train", [*SMALL], tmp_path)
    cb = hydra.utils.instantiate(cfg.callbacks.interval_checkpoint)
    assert cb._train_time_interval == datetime.timedelta(minutes=10)
    assert cb.save_last and cb.save_top_k == 0
