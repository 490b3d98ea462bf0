"""The sample command's config for a library caller: conf/sample.yaml with the caller's keys on top, as
`python -m lesion_lightning.sample key=value ...` would get them (no Hydra run folder: the caller names
`out_dir`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lesion_lightning.utils.config import CONF_DIR


def sample_config(**overrides: Any) -> DictConfig:
    """conf/sample.yaml's own keys (no defaults list) with `overrides` merged on top."""
    base = OmegaConf.load(CONF_DIR / "sample.yaml")
    base.pop("defaults", None)
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"{unknown} are not keys of conf/sample.yaml ({sorted(base)})")
    return OmegaConf.merge(base, overrides)
