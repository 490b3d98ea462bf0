"""Every experiment trains one fast_dev_run step through `train(cfg)`, on tiny synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clihelpers import CONF, compose_config

from lesion_lightning.train import train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SHRINK = ["debug=fdr", "logger=csv", "trainer=cpu", "callbacks.rich_progress_bar=null", "data.num_workers=0"]


def fake_index_dataset(root: Path, grid: int = 8, num_codes: int = 512) -> Path:
    """An encode output (manifest + uint16 grids) without a VQ-VAE: enough to train a prior."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {"train": 6, "val": 4, "test": 4}
    for split, n in splits.items():
        np.save(root / f"{split}_indices.npy", rng.integers(0, num_codes, (n, grid, grid)).astype(np.uint16))
        np.save(root / f"{split}_labels.npy", rng.integers(0, 2, n).astype(np.int64))
    manifest = {
        "grid_size": [grid, grid],
        "num_codes": num_codes,
        "splits": splits,
        "class_names": ["melanoma", "nevus"],
        "vqvae": {"checkpoint": str(root / "missing.ckpt"), "fingerprint": "0" * 64},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment: str, tmp_path: Path) -> None:
    if "pixelcnn" in experiment:
        data = [f"data.root={fake_index_dataset(tmp_path / 'indices')}", "data.batch_size=2"]
    else:  # the real image path, generated lesions at a small size
        data = [
            "data=synthetic",
            "data.image_size=32",
            "data.synthetic.num_images=12",
            "data.batch_size=2",
            "model.net.num_downsamples=1",
        ]
    cfg = compose_config("train", [f"experiment={experiment}", *data, *SHRINK], tmp_path / "run")
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert np.isfinite(metrics["train/loss_step"]) and np.isfinite(metrics["test/loss"])
