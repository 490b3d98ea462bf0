"""Checkpoints as W&B model artifacts, online or offline (offline ones upload with `wandb sync`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

_CHOICES = ("best", "last", "both", "none")


class WandbCheckpointArtifacts(L.Callback):
    """At the end of fit, log the best and/or last checkpoint as a `model` artifact.

    Lightning's own `log_model=True` refuses offline runs; this works in both modes.
    """

    def __init__(self, upload: str = "best") -> None:
        if upload not in _CHOICES:
            raise ValueError(f"callbacks.wandb_artifacts.upload must be one of {_CHOICES}, got {upload!r}")
        self.upload = upload

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        ckpt_cb = trainer.checkpoint_callback
        if self.upload == "none" or not loggers or not isinstance(ckpt_cb, ModelCheckpoint):
            return
        import wandb

        paths = {}
        if self.upload in ("best", "both") and ckpt_cb.best_model_path:
            paths["best"] = ckpt_cb.best_model_path
        if self.upload in ("last", "both") and ckpt_cb.last_model_path:
            paths["latest"] = ckpt_cb.last_model_path
        run = loggers[0].experiment
        for alias, path in paths.items():
            if not Path(path).is_file():
                continue
            score = ckpt_cb.best_model_score
            artifact = wandb.Artifact(
                name=f"model-{run.id}",
                type="model",
                metadata={
                    "monitor": ckpt_cb.monitor,
                    "score": float(score) if score is not None and alias == "best" else None,
                    "global_step": trainer.global_step,
                    "stage": type(pl_module).__name__,
                },
            )
            artifact.add_file(path, name=Path(path).name)
            run.log_artifact(artifact, aliases=[alias])
