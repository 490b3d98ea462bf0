"""W&B that never prompts and never hangs: online only when credentials exist."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.utilities import rank_zero_info


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
