"""Shared pieces of the curve tests: a tiny real split of synthetic lesions and a small-CNN fit/predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.modules.classifier_module import predict_proba
from lesion_lightning.modules.classifier_training import train_classifier

SIZE = 32
SMALL_CNN = {
    "_target_": "lesion_lightning.modules.classifier_module.ClassifierModule",
    "net": {"name": "small_cnn", "width": 8},
    "lr": 3e-3,
    "weight_decay": 1e-4,
}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def toy_split(root: Path, num_images: int, seed: int = 0, test_fraction: float = 0.4) -> LesionDataModule:
    dm = LesionDataModule(
        root=str(root),
        image_size=SIZE,
        layout="isic_archive",
        test_fraction=test_fraction,
        synthetic={"num_images": num_images, "image_size": SIZE, "seed": seed},
    )
    dm.prepare_data()
    return dm


def make_fit(class_names, steps: int, batch_size: int = 16):
    def fit(dataset: Dataset, sampler, seed: int, name: str):
        model, _ = train_classifier(
            dataset,
            SMALL_CNN,
            list(class_names),
            "minmax",
            SIZE,
            steps,
            batch_size,
            seed,
            0,
            TRAINER,
            name=name,
            sampler=sampler,
        )
        return model

    return fit


def predict(model, dataset: Dataset) -> torch.Tensor:
    loader = DataLoader(dataset, batch_size=64, shuffle=False)
    return predict_proba(model, (b["image"] for b in loader))


def labels_of(dataset) -> torch.Tensor:
    return torch.as_tensor(np.asarray(dataset.labels), dtype=torch.long)
