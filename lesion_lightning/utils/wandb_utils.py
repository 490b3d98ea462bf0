"""W&B that never prompts and never hangs: online only when credentials exist."""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.utilities import rank_zero_info

from lesion_lightning.utils.io import atomic_write_text


def wandb_has_credentials() -> bool:
    """True when an API key is configured (env var or the netrc entry `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC", os.path.join(os.path.expanduser("~"), ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_offline(offline: bool | str) -> bool:
    """Map the config's `offline: auto|true|false` to a bool; WANDB_MODE=offline/disabled wins."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if isinstance(offline, str):
        if offline.lower() != "auto":
            raise ValueError(f"logger.wandb.offline must be auto, true or false, got {offline!r}")
        if wandb_has_credentials():
            return False
        rank_zero_info(
            "W&B: no credentials found (WANDB_API_KEY or `wandb login`), logging offline. "
            "Upload later with `wandb sync <run dir>/wandb/offline-run-*`."
        )
        return True
    return bool(offline)


def finish_wandb() -> None:
    """Close the active run so the next multirun job starts its own (no-op without wandb or a run)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()


RUN_ID_FILE = "wandb_run_id"


def stage_run_id(run_dir: str | Path, resume_from: str | None = None) -> str:
    """The W&B run id of this stage's run folder: made and stored on first start, read on every resume.

    ``resume_from`` (the run's ``ckpt_path``): a checkpoint in another run folder's ``checkpoints/`` carries
    that folder's id over, so a stage resumed into a new folder still continues the same W&B run.
    """
    own = Path(run_dir) / RUN_ID_FILE
    candidates = [own]
    if resume_from and resume_from != "last":
        ckpt = Path(resume_from)
        if ckpt.parent.name == "checkpoints":
            candidates.insert(0, ckpt.parent.parent / RUN_ID_FILE)
    for path in candidates:
        try:
            run_id = path.read_text().strip()
        except OSError:
            continue
        if run_id:
            if path != own:
                atomic_write_text(own, run_id + "\n")
            return run_id
    run_id = secrets.token_hex(4)  # 8 of [0-9a-f], within W&B's allowed run-id characters
    atomic_write_text(own, run_id + "\n")
    return run_id
