"""The sample command's config for a library caller: conf/sample.yaml composed by Hydra with the
caller's keys as overrides, as `python -m lesion_lightning.sample key=value ...` would get them (no Hydra
run folder: the caller names `out_dir`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from lesion_lightning.utils.config import compose_config


def sample_config(**values: Any) -> DictConfig:
    """conf/sample.yaml with `values` on top; an unknown key is Hydra's clear error."""
    return compose_config("sample", values)
