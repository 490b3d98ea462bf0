"""W&B goes offline by itself without credentials, online with them; WANDB_MODE always wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lesion_lightning.utils.instantiate import instantiate_loggers
from lesion_lightning.utils.wandb_utils import resolve_offline, wandb_has_credentials


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path: Path) -> Path:
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_no_credentials_means_offline(no_wandb_env: Path) -> None:
    assert not wandb_has_credentials()
    assert resolve_offline("auto") is True


def test_api_key_or_netrc_means_online(no_wandb_env: Path, monkeypatch) -> None:
    no_wandb_env.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    no_wandb_env.chmod(0o600)
    assert wandb_has_credentials() and resolve_offline("auto") is False
    no_wandb_env.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "y" * 40)
    assert resolve_offline("auto") is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_offline("auto") is True and resolve_offline(False) is True


def test_explicit_and_bad_values(no_wandb_env: Path) -> None:
    assert resolve_offline(True) is True and resolve_offline(False) is False
    with pytest.raises(ValueError, match="logger.wandb.offline"):
        resolve_offline("sometimes")


def test_logger_config_builds_an_offline_wandb_logger_without_prompting(
    no_wandb_env: Path, tmp_path: Path
) -> None:
    cfg = OmegaConf.create(
        {
            "wandb": {
                "_target_": "lightning.pytorch.loggers.wandb.WandbLogger",
                "project": "t",
                "save_dir": str(tmp_path / "w"),
                "offline": "auto",
                "log_model": True,
            }
        }
    )
    (logger,) = instantiate_loggers(cfg)
    assert logger._offline is True and logger._log_model is False
    with pytest.raises(ValueError, match="logger.broken"):
        instantiate_loggers(OmegaConf.create({"broken": {"project": "x"}}))
