"""Train a ClassifierModule for a fixed number of optimizer steps (the utility stage's arms and the
guidance benchmark's stand-in classifier)."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from lesion_lightning.modules.classifier_module import ClassifierModule


def train_classifier(
    dataset: Dataset,
    model_cfg: DictConfig | dict,
    class_names: list[str],
    normalization: str,
    image_size: int,
    steps: int,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    trainer_cfg: dict | None = None,
    log_dir: Path | None = None,
    name: str = "classifier",
    sampler: Sampler | None = None,
) -> tuple[ClassifierModule, L.Trainer]:
    """A ClassifierModule trained for exactly ``steps`` optimizer steps on ``dataset`` (reshuffled per
    epoch, or drawn by ``sampler``: the balanced arm's data.budget.balanced_sampler)."""
    if len(dataset) == 0:
        raise ValueError(f"{name}: no training images")
    L.seed_everything(seed, workers=True)
    model = hydra.utils.instantiate(
        model_cfg, class_names=list(class_names), normalization=normalization, image_size=int(image_size)
    )
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > batch_size,  # a trailing batch of one breaks BatchNorm
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    trainer = L.Trainer(
        max_steps=int(steps),
        logger=CSVLogger(str(log_dir), name=name, version="") if log_dir else False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, int(steps) // 10)),
        **(trainer_cfg or {}),
    )
    trainer.fit(model, train_dataloaders=loader)
    return model.eval(), trainer
