"""Build callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import os

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from lesion_lightning.utils.wandb_utils import resolve_offline, stage_run_id


def _entries(cfg: DictConfig | None, key: str):
    if not cfg:
        return
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"`{key}` must be a mapping of name -> config, got {type(cfg).__name__}")
    for name, node in cfg.items():
        if node is None:  # `callbacks.image_logger=null` switches one off
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"`{key}.{name}` needs a `_target_` (got {OmegaConf.to_yaml(node)!r})")
        yield name, node


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [hydra.utils.instantiate(node) for _, node in _entries(cfg, "callbacks")]


def instantiate_loggers(cfg: DictConfig | None, resume_from: str | None = None) -> list[Logger]:
    """Loggers of the `logger` group. A WandbLogger gets the run id stored in its run folder (`save_dir`)
    with resume="allow": a stage resumed there (or from a checkpoint `resume_from` in another run folder)
    continues its W&B run instead of starting a second one."""
    loggers: list[Logger] = []
    for _, node in _entries(cfg, "logger"):
        node = node.copy()
        if node._target_.endswith("WandbLogger"):
            with open_dict(node):
                node.offline = resolve_offline(node.get("offline", "auto"))
                if node.offline and node.get("log_model"):
                    # Lightning refuses log_model offline; the artifact callback logs checkpoints instead
                    node.log_model = False
                if rank_zero_only.rank == 0 and not node.get("id"):
                    node.id = stage_run_id(node.save_dir, resume_from)
                    node.resume = node.get("resume") or "allow"
            os.makedirs(node.save_dir, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node))
    return loggers
