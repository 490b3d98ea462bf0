"""What every stage's LightningModule shares: its optimizer from its hyper-parameters, a checkpoint
that names the module kind (modules/checkpoints.py refuses a checkpoint of the wrong kind by that name),
a finite-loss check before every backward pass, and learning rates that follow `model.lr` on resume."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lesion_lightning.modules.optim import adam_with_schedule
from lesion_lightning.utils.finite import NonFiniteTrainingError, describe_nonfinite


class LesionModule(L.LightningModule):
    """Base of VQVAEModule, PixelCNNModule and ClassifierModule; their hparams hold lr, weight_decay,
    scheduler and warmup_steps.

    Every loss that reaches a backward pass goes through :meth:`on_before_backward` (Lightning calls it
    for automatic optimization and for each ``self.manual_backward(loss)`` of a manually optimized
    module), which stops training at the first NaN/inf loss with :class:`NonFiniteTrainingError`. The
    error lists every ``train/...`` value the step logged, so a module reports its loss terms just by
    logging them. A subclass overriding ``on_before_backward`` or ``on_train_batch_start`` calls super().
    """

    def __init__(self) -> None:
        super().__init__()
        self._step_terms: dict[str, object] = {}
        self._checkpoint_lr: float | None = None

    def configure_optimizers(self):
        h = self.hparams
        return adam_with_schedule(
            self.parameters(),
            h.lr,
            h.weight_decay,
            h.scheduler,
            h.warmup_steps,
            self.trainer.estimated_stepping_batches,
        )

    # ---------------------------------------------------------------- non-finite losses
    def log(self, name: str, value, *args, **kwargs) -> None:
        # log_dict goes through here too: remember this step's training terms for the error message
        if name.startswith("train/") and isinstance(value, torch.Tensor | int | float):
            self._step_terms[name] = value.detach() if isinstance(value, torch.Tensor) else value
        super().log(name, value, *args, **kwargs)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._step_terms = {}

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self.check_finite_loss(loss)

    def check_finite_loss(self, loss: torch.Tensor, what: str = "non-finite training loss") -> None:
        """Raise :class:`NonFiniteTrainingError` (on every rank) when ``loss`` holds a NaN or inf."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        trainer = self.trainer
        if trainer.world_size > 1:  # every rank stops together, or the others hang in the next all-reduce
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        terms = {**self._step_terms, "loss passed to backward": loss.detach()}
        raise NonFiniteTrainingError(
            describe_nonfinite(
                what,
                trainer.global_step,
                trainer.current_epoch,
                terms,
                [g["lr"] for opt in trainer.optimizers for g in opt.param_groups],
                str(trainer.precision),
                trainer.gradient_clip_val,
                last_checkpoint(trainer),
            ),
            trainer.global_step,
        )

    # ---------------------------------------------------------------- resume with another lr
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._checkpoint_lr = (checkpoint.get("hyper_parameters") or {}).get("lr")

    def on_train_start(self) -> None:
        """A resumed run keeps the optimizer state and schedule position but takes `model.lr` from the
        command line (a diverged run resumes from its last finite checkpoint with a lower lr)."""
        old, new = self._checkpoint_lr, self.hparams.get("lr")
        if not old or not new or old == new:
            return
        ratio = float(new) / float(old)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
        for config in self.trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * ratio for lr in config.scheduler.base_lrs]
        rank_zero_info(
            f"resumed with model.lr={new:g} (the checkpoint trained with {old:g}): lrs scaled by {ratio:g}"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lesion_lightning"] = {"module": type(self).__name__}


def last_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest existing `last` checkpoint of the trainer's ModelCheckpoint callbacks, if any."""
    paths = [
        cb.last_model_path
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint) and cb.last_model_path and os.path.isfile(cb.last_model_path)
    ]
    return max(paths, key=os.path.getmtime) if paths else None
