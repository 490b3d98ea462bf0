"""Every experiment file is a diff: each key it sets changes what the config would be without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelpers import CONF, compose_config
from omegaconf import OmegaConf

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# identity keys every experiment names for itself, whatever their default
NAMING = {"task_name", "stage", "tags"}


def _leaves(node, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value and not any(k.startswith("_") for k in value):
            out.update(_leaves(value, f"{full}."))
        else:
            out[full] = value
    return out


def _group_overrides(defaults: list) -> list[str]:
    """`override /data: indices` -> `data=indices` (what the experiment picks before its own keys)."""
    out = []
    for entry in defaults or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.removeprefix("override ").lstrip("/")
                out.append(f"{group}={value}")
    return out


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_sets_only_what_differs(name: str, tmp_path: Path) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    base = compose_config("train", _group_overrides(raw.pop("defaults", [])), tmp_path)
    restated = []
    for key, value in _leaves(raw).items():
        if key.split(".")[0] in NAMING:
            continue
        found = OmegaConf.select(base, key, default="<absent>")
        if OmegaConf.is_config(found):
            found = OmegaConf.to_container(found, resolve=False)
        if found == value:
            restated.append(f"{key}={value!r}")
    assert not restated, f"conf/experiment/{name}.yaml restates the defaults {restated}: delete those lines"
