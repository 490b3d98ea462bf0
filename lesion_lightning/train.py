"""Train one stage: `python -m lesion_lightning.train experiment=vqvae_128` (any Hydra override)."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from lesion_lightning.utils.config import fill_model_from_data, save_resolved_config
from lesion_lightning.utils.hydra_ddp import pin_ddp_relaunch_to_this_job, reset_distributed_after_job
from lesion_lightning.utils.instantiate import instantiate_callbacks, instantiate_loggers
from lesion_lightning.utils.wandb_utils import finish_wandb

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit (and test) the model the config describes; importable by tests and the pipeline."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    model: L.LightningModule = hydra.utils.instantiate(fill_model_from_data(cfg.model, datamodule))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.is_global_zero:
        save_resolved_config(cfg, cfg.paths.output_dir)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    metrics: dict[str, float] = {}
    try:
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(_floats(trainer.callback_metrics))
        if cfg.test:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(_floats(trainer.callback_metrics))
    finally:
        finish_wandb()
    if trainer.is_global_zero and trainer.checkpoint_callback is not None:
        log.info("Checkpoints: %s", trainer.checkpoint_callback.dirpath)
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule, "cfg": cfg}


def _floats(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    pin_ddp_relaunch_to_this_job()
    try:
        metrics, _ = train(cfg)
    finally:
        reset_distributed_after_job()
    return optimized_value(metrics, cfg.optimized_metric)


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """What a sweeper (hparams_search/) optimises: `optimized_metric` of this run's metrics."""
    if name is None:
        return None
    if name not in metrics:
        raise ValueError(
            f"optimized_metric={name} was not logged by this run; choose one of {sorted(metrics)}"
        )
    return metrics[name]


if __name__ == "__main__":
    main()
