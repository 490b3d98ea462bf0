"""Build callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import os

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from lesion_lightning.utils.wandb_utils import resolve_offline


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


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    loggers: list[Logger] = []
    for _, node in _entries(cfg, "logger"):
        node = node.copy()
        if node._target_.endswith("WandbLogger"):
            with open_dict(node):
                node.offline = resolve_offline(node.get("offline", "auto"))
                if node.offline and node.get("log_model"):
                    # Lightning refuses log_model offline; the artifact callback logs checkpoints instead
                    node.log_model = False
            os.makedirs(node.save_dir, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node))
    return loggers
