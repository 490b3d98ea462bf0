"""`hparams_search=vqvae_optuna`: the Optuna sweeper composes with the train config and runs trials that
return validation PSNR (a 2-trial CPU search on tiny synthetic images)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from clihelpers import TINY_VQVAE, compose_config, run_cli

from lesion_lightning.train import optimized_value


def test_search_config_composes(tmp_path: Path) -> None:
    cfg = compose_config("train", ["hparams_search=vqvae_optuna", "experiment=vqvae_64"], tmp_path)
    assert cfg.optimized_metric == "val/psnr" and cfg.model.net.ema is True
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {
        "model.lr",
        "model.net.beta",
        "model.net.codebook_size",
        "model.net.ema_decay",
    }


def test_optimized_value_names_the_missing_metric() -> None:
    assert optimized_value({"val/psnr": 20.5}, "val/psnr") == 20.5
    assert optimized_value({"val/psnr": 20.5}, None) is None
    with pytest.raises(ValueError, match="val/ssim.*val/psnr"):
        optimized_value({"val/psnr": 20.5}, "val/ssim")


@pytest.mark.slow
def test_two_trial_search_on_cpu(tmp_path: Path) -> None:
    run_cli(
        "lesion_lightning.train",
        "hparams_search=vqvae_optuna",
        # the searched keys must not be fixed on the command line (that overrides the search space)
        *(o for o in TINY_VQVAE if not o.startswith("model.net.codebook_size=")),
        "model.net.code_dim=4",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "logger=csv",
        "test=false",
        "callbacks.image_logger=null",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    sweep = tmp_path / "sweep"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and math.isfinite(results["best_value"])
    assert results["best_value"] > 0, "validation PSNR in dB, not a loss"
    best = results["best_params"]
    assert 5e-5 <= best["model.lr"] <= 3e-3 and 0.1 <= best["model.net.beta"] <= 1.0
    assert (
        best["model.net.codebook_size"] in (128, 256, 512, 1024)
        and 0.9 <= best["model.net.ema_decay"] <= 0.999
    )
    for trial in ("0", "1"):
        assert (sweep / trial / "checkpoints" / "last.ckpt").is_file()
        resolved = yaml.safe_load((sweep / trial / "config_resolved.yaml").read_text())
        assert resolved["model"]["net"]["ema"] is True
