"""Checkpoints a shared cluster cannot spoil: never non-finite, written on preemption, space checked first.

- :class:`FiniteModelCheckpoint` is Lightning's ``ModelCheckpoint`` that refuses to save ``best`` or
  ``last`` when the weights or the monitored metric are NaN/inf (it stops training with
  :class:`~lesion_lightning.utils.finite.NonFiniteTrainingError` instead), so ``last.ckpt`` is always the
  last finite state, and that checks free space before each write. ``callbacks.model_checkpoint`` keeps
  best + last at each validation; ``callbacks.interval_checkpoint`` (the same class with Lightning's
  ``train_time_interval``) refreshes ``last.ckpt`` every few minutes of training.
- :class:`PreemptionCheckpoint` turns SIGTERM / SIGUSR1 (scancel, SLURM preemption or its wall-time
  warning, ``kill``) into a ``last.ckpt`` written at the end of the current training step, after which
  ``train`` exits with 128 + the signal number. Lightning's own signal handling does the stopping: its
  SIGTERM handler sets ``trainer.received_sigterm`` and its loops raise ``SIGTERMException`` at the end of
  the step (every DDP rank together); this callback routes SIGUSR1 to that handler when Lightning's SLURM
  auto-requeue does not own SIGUSR1, and saves the checkpoint in ``on_exception``.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lesion_lightning.utils.diskspace import ensure_free_space, reporting_disk_errors, tensor_bytes
from lesion_lightning.utils.finite import NonFiniteTrainingError, describe_nonfinite, nonfinite_tensors

LOG_DIR_HINT = "paths.log_dir=<a folder with room> (or hydra.run.dir=...)"


def _lrs(trainer: L.Trainer) -> list[float]:
    return [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]


def refuse_nonfinite(trainer: L.Trainer, monitor: str | None = None, candidates: dict | None = None) -> None:
    """Raise NonFiniteTrainingError if the module's weights (or ``candidates[monitor]``) are not finite."""
    from lesion_lightning.modules.base import last_checkpoint

    module = trainer.lightning_module
    problems = []
    bad_weights = nonfinite_tensors(module.state_dict())
    if bad_weights:
        shown = ", ".join(bad_weights[:5]) + (
            f" (+{len(bad_weights) - 5} more)" if len(bad_weights) > 5 else ""
        )
        problems.append(f"non-finite weights in {shown}")
    if monitor and candidates and monitor in candidates and nonfinite_tensors({monitor: candidates[monitor]}):
        problems.append(f"non-finite monitored metric {monitor}={float(candidates[monitor])}")
    if not problems:
        return
    terms = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    raise NonFiniteTrainingError(
        describe_nonfinite(
            " and ".join(problems) + "; checkpoint not saved",
            trainer.global_step,
            trainer.current_epoch,
            terms,
            _lrs(trainer),
            str(trainer.precision),
            trainer.gradient_clip_val,
            last_checkpoint(trainer),
        ),
        trainer.global_step,
    )


def checkpoint_bytes(trainer: L.Trainer) -> int:
    """What a full checkpoint will take: weights + optimizer state (the rest is small)."""
    return tensor_bytes(trainer.lightning_module.state_dict()) + sum(
        tensor_bytes(opt.state_dict().get("state", {})) for opt in trainer.optimizers
    )


@contextmanager
def checkpoint_space(trainer: L.Trainer, filepath: str | Path):
    """Check free space for a checkpoint first; a write that still fails on space says so."""
    folder = Path(filepath).parent
    needed = checkpoint_bytes(trainer)
    if trainer.is_global_zero:
        ensure_free_space(folder, needed, "checkpoint", LOG_DIR_HINT)
    with reporting_disk_errors(folder, "checkpoint", LOG_DIR_HINT, needed):
        yield


class FiniteModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that never saves non-finite weights or a non-finite monitored metric."""

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self.save_top_k != 0:
            refuse_nonfinite(trainer, self.monitor, monitor_candidates)
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        if self.save_last:
            refuse_nonfinite(trainer, self.monitor, monitor_candidates)
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning writes last.ckpt here when this callback never did; for the interval callback that
        # would overwrite the epoch callback's final last.ckpt with a post-training copy (epoch + 1)
        others = [
            cb
            for cb in trainer.checkpoint_callbacks
            if cb is not self
            and isinstance(cb, ModelCheckpoint)
            and cb.save_last
            and cb.dirpath == self.dirpath
        ]
        if self._train_time_interval is not None and others:
            return
        super().on_train_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with checkpoint_space(trainer, filepath):
            super()._save_checkpoint(trainer, filepath)


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGUSR1": signal.SIGUSR1}


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM / SIGUSR1: finish the current step, write ``<dirpath>/last.ckpt``, stop.

    ``signals``: which of SIGTERM, SIGUSR1 to act on (``callbacks.preemption.signals``). ``signal_received``
    holds the signal number once one arrived (``train`` exits with 128 + it).
    """

    def __init__(self, dirpath: str, signals: list[str] | tuple[str, ...] = ("SIGTERM", "SIGUSR1")) -> None:
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"callbacks.preemption.signals: {unknown} not among {list(SIGNALS)}")
        self.dirpath = Path(dirpath)
        self.signals = [SIGNALS[s] for s in signals]
        self.signal_received: int | None = None
        self.saved: Path | None = None

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registered its handlers just before this hook; wrap them (its teardown restores the
        # handlers that were there before fit)
        if threading.current_thread() is not threading.main_thread():
            return
        lightning_term = signal.getsignal(signal.SIGTERM)
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if signum != signal.SIGTERM and previous not in (None, signal.SIG_DFL, signal.SIG_IGN):
                # Lightning's SLURM auto-requeue owns this signal (checkpoint + requeue); keep its behaviour
                signal.signal(signum, self._recording(previous))
                continue
            signal.signal(signum, self._recording(lightning_term))

    def _recording(self, handler):
        def handle(signum, frame) -> None:
            if self.signal_received is None:
                self.signal_received = signum
            if callable(handler):
                handler(signum, frame)

        return handle

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        refuse_nonfinite(trainer)
        # keep the checkpoint callbacks' own record of last.ckpt in the saved state consistent
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and Path(cb.dirpath or "") == self.dirpath:
                cb.last_model_path = str(self.ckpt_path)
        with checkpoint_space(trainer, self.ckpt_path):
            trainer.save_checkpoint(self.ckpt_path)
        self.saved = self.ckpt_path
        name = signal.Signals(self.signal_received or signal.SIGTERM).name
        rank_zero_info(
            f"{name} received: wrote {self.ckpt_path} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); resume with ckpt_path={self.ckpt_path}"
        )


def exit_status_after_signal(trainer: L.Trainer) -> int:
    """128 + the signal that stopped training (what a shell reports for a process killed by it)."""
    for cb in trainer.callbacks:
        if isinstance(cb, PreemptionCheckpoint) and cb.signal_received is not None:
            return 128 + int(cb.signal_received)
    return 128 + int(signal.SIGTERM)
