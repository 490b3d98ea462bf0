"""One W&B run per stage across resumes: the run id lives in the stage's run folder.

Watched failing on the code before: the resumed attempt wrote `offline-run-*-<new id>`.
"""

from __future__ import annotations

from pathlib import Path

from clihelpers import TINY_VQVAE, compose_config, offline_ids

from lesion_lightning.train import train


def test_a_stage_resumed_from_last_ckpt_continues_its_wandb_run(tmp_path: Path) -> None:
    base = ["experiment=quickstart", *TINY_VQVAE, "logger=wandb", "callbacks.image_logger=null", "test=false"]
    run = tmp_path / "run"
    train(compose_config("train", [*base, "trainer.max_steps=2"], run))
    first = offline_ids(run)
    assert len(first) == 1
    train(
        compose_config("train", [*base, "trainer.max_steps=4", "trainer.max_epochs=3", "ckpt_path=last"], run)
    )
    ids = offline_ids(run)
    assert len(ids) == 2 and ids[0] == ids[1] == first[0], ids


def test_a_checkpoint_from_another_run_folder_carries_its_run_id(tmp_path: Path) -> None:
    from lesion_lightning.utils.wandb_utils import stage_run_id

    old, new = tmp_path / "old", tmp_path / "new"
    (old / "checkpoints").mkdir(parents=True)
    run_id = stage_run_id(old)
    assert stage_run_id(old) == run_id, "stable in its folder"
    assert stage_run_id(new, str(old / "checkpoints" / "last.ckpt")) == run_id
    assert stage_run_id(new) == run_id, "and stored in the new folder for its next resume"
    assert stage_run_id(tmp_path / "other") != run_id
