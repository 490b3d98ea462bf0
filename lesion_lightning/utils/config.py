"""Small helpers around the composed Hydra config."""

from __future__ import annotations

from pathlib import Path

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
