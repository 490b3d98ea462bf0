"""Small helpers around the composed Hydra config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

# conf/ beside the package: where the commands' `@hydra.main(config_path="../conf")` finds it
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def save_resolved_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    from lesion_lightning.utils.io import atomic_write_text

    return atomic_write_text(Path(output_dir) / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def fill_model_from_data(model_cfg: DictConfig, datamodule) -> DictConfig:
    """Fill `model.net` keys left null from what the data knows (codebook size, classes).

    A datamodule exposes `model_defaults() -> dict` for this; keys set explicitly in the config win,
    but a contradiction (a prior with 256 codes over a 512-code index dataset) is an error.
    """
    defaults = datamodule.model_defaults() if hasattr(datamodule, "model_defaults") else {}
    if not defaults:
        return model_cfg
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        for key, value in defaults.get("net", {}).items():
            current = model_cfg.net.get(key)
            if current is None:
                model_cfg.net[key] = value
            elif key == "num_codes" and current != value:
                raise ValueError(
                    f"model.net.num_codes={current} but the index dataset at data.root uses a codebook of "
                    f"{value} codes; remove the override or point data.root at a matching encode output"
                )
        for key, value in defaults.items():
            if key != "net" and model_cfg.get(key) is None:
                model_cfg[key] = value
    return model_cfg


def plain_settings(cfg: DictConfig) -> dict:
    """The stage's resolved config as plain values, without Hydra's own node (for metrics.json and loggers)."""
    return {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }


def to_overrides(node, prefix: str = "") -> list[str]:
    """Nested mapping -> Hydra `key=value` overrides (lists and strings quoted for the grammar)."""
    if node is None:
        return []
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    out: list[str] = []
    for key, value in container.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value and not any(k.startswith("_") for k in value):
            out += to_overrides(value, f"{full}.")
        else:
            # dotted keys may be new to the stage's config (e.g. data.classes.melanoma); `++` adds or
            # overrides, while top-level keys stay plain so group choices like `logger=csv` still work
            out.append(f"{'++' if '.' in full else ''}{full}={hydra_value(value)}")
    return out


def hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    safe = all(c.isalnum() or c in "-_./:+@" for c in text) and text not in ("true", "false", "null")
    return text if safe else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_config(config_name: str, values: Mapping[str, Any] | None = None) -> DictConfig:
    """`conf/<config_name>.yaml` composed by Hydra with `values` as overrides, as
    `python -m lesion_lightning.<config_name> key=value ...` would get it, for a library caller (the
    utility stage and the guidance benchmark sampling through the sample command's config).

    Inside a running Hydra app (whose search path is conf/) it composes there; elsewhere it initialises
    Hydra on conf/ for the call. The `paths` node is dropped: it points into a Hydra run folder a library
    caller does not have, so the caller passes its output paths (e.g. `out_dir`) itself.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = to_overrides(dict(values or {}))
    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=config_name, overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.pop("paths", None)
    return cfg
