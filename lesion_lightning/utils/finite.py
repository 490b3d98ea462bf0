"""Non-finite training states: one error type, one report, one weight check shared by every module.

A NaN/inf loss under a too-high learning rate or an fp16 overflow silently turns every weight into NaN;
the run then "finishes", its checkpoint becomes best, and encode/sample consume a NaN model. The
LightningModule base (``modules/base.py``) checks each loss before its backward pass and raises
:class:`NonFiniteTrainingError`; the checkpoint callback (``callbacks/checkpointing.py``) refuses to
save weights or a monitored metric that are not finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

# what the error tells the user to try, in this order
REMEDIES = (
    "lower the learning rate (e.g. model.lr={lr_hint})",
    "clip gradients (trainer.gradient_clip_val=1.0)",
    "train in full precision (trainer.precision=32-true)",
)


class NonFiniteTrainingError(RuntimeError):
    """Training produced a NaN/inf loss, metric or weight; ``step`` is the global step it happened at."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def _as_float(value) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, int | float):
        return float(value)
    return None


def describe_nonfinite(
    what: str,
    step: int,
    epoch: int,
    terms: Mapping[str, object],
    lrs: Iterable[float],
    precision: str,
    gradient_clip_val: float | None,
    last_checkpoint: str | None,
) -> str:
    """The error text: where it happened, every logged loss term, the lr(s), precision and what to try."""
    lrs = [float(lr) for lr in lrs]
    shown_terms = ", ".join(f"{k}={_as_float(v)!r}" for k, v in sorted(terms.items())) or "none logged"
    lr_hint = f"{min(lrs) / 10:g}" if lrs else "<a tenth of it>"
    # suggest only what is not already in place
    remedies = [REMEDIES[0]]
    if not gradient_clip_val:
        remedies.append(REMEDIES[1])
    if not str(precision).startswith(("32", "64")):
        remedies.append(REMEDIES[2])
    resume = (
        f"{last_checkpoint} is the last finite state: resume from it with ckpt_path={last_checkpoint} "
        "and a lower model.lr (the optimizer state is kept, the learning rates are rescaled)"
        if last_checkpoint
        else "no finite checkpoint was saved before it; start again"
    )
    return (
        f"{what} at global step {step} (epoch {epoch}); training stopped.\n"
        f"  loss terms logged this step: {shown_terms}\n"
        f"  learning rate(s): {', '.join(f'{lr:g}' for lr in lrs) or 'unknown'}; "
        f"precision: {precision}; gradient_clip_val: {gradient_clip_val}\n"
        f"  try: {'; '.join(r.format(lr_hint=lr_hint) for r in remedies)}\n"
        f"  {resume}"
    )


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or inf (one host sync for the whole mapping)."""
    names = [k for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not names:
        return []
    checks = [torch.isfinite(tensors[k]).all() for k in names]
    try:
        flags = torch.stack(checks).cpu()
    except RuntimeError:  # tensors on several devices: one sync each
        flags = torch.stack([c.cpu() for c in checks])
    return [k for k, ok in zip(names, flags.tolist(), strict=True) if not ok]


DIVERGED_FILE = "diverged.json"


def record_divergence(run_dir: str | Path, err: NonFiniteTrainingError) -> Path:
    """``<run dir>/diverged.json``: the step and message, for the pipeline to report the stage's stop."""
    from lesion_lightning.utils.io import atomic_write_json

    return atomic_write_json(Path(run_dir) / DIVERGED_FILE, {"step": err.step, "message": str(err)})


def clear_divergence(run_dir: str | Path) -> None:
    """A new attempt in the same run folder starts without the previous attempt's record."""
    (Path(run_dir) / DIVERGED_FILE).unlink(missing_ok=True)


def read_divergence(run_dir: str | Path) -> dict | None:
    import json

    path = Path(run_dir) / DIVERGED_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
