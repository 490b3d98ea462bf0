"""A parallel local sweep gives each job slot its own GPUs (hydra/launcher=local_parallel).

Watched failing on the code before: nothing set CUDA_VISIBLE_DEVICES, every job saw every GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from clihelpers import CONF

from lesion_lightning.utils import gpu_slots
from lesion_lightning.utils.gpu_slots import claim_slot, plan_slots, visible_gpus


def test_slots_split_the_visible_gpus_and_refuse_what_does_not_fit(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert visible_gpus() == ["0", "1", "2", "3"]
    assert plan_slots(visible_gpus(), n_jobs=2, gpus_per_job=2) == [["0", "1"], ["2", "3"]]
    assert plan_slots(visible_gpus(), n_jobs=4, gpus_per_job=1) == [["0"], ["1"], ["2"], ["3"]]
    with pytest.raises(ValueError, match=r"n_jobs=3 x gpus_per_job=2 needs 6 GPUs, but 4 are visible"):
        plan_slots(visible_gpus(), n_jobs=3, gpus_per_job=2)
    with pytest.raises(ValueError, match="n_jobs=-1"):
        plan_slots(visible_gpus(), n_jobs=-1, gpus_per_job=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert visible_gpus() == ["5", "7"], "the launching shell's own restriction is respected"


def test_two_workers_never_claim_the_same_slot(tmp_path: Path) -> None:
    first, held = claim_slot(tmp_path, 2)
    second, held2 = claim_slot(tmp_path, 2)  # another open file: flock conflicts like another process
    assert {first, second} == {0, 1}
    with pytest.raises(RuntimeError, match="all 2 GPU slots"):
        claim_slot(tmp_path, 2)
    held.close()
    assert claim_slot(tmp_path, 2)[0] == first, "a dead worker's slot is free again"
    held2.close()


def test_callback_with_no_gpu_leaves_devices_alone(monkeypatch) -> None:
    monkeypatch.delenv(gpu_slots.SLOTS_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    gpu_slots.GpuSlots(gpus_per_job=1, n_jobs=2).on_multirun_start(config=None)
    assert gpu_slots.SLOTS_ENV not in os.environ


APP = """
import os, time, hydra
@hydra.main(version_base="1.3", config_path=None, config_name="app")
def main(cfg):
    time.sleep(1.5)  # overlap with the other slot's job
    with open(os.path.join(cfg.out, f"job{cfg.x}.txt"), "w") as f:
        f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + " " + str(os.getpid()))
if __name__ == "__main__":
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(name="app", node={"x": 0, "out": "."})
    main()
"""


@pytest.mark.slow
def test_parallel_sweep_jobs_get_disjoint_devices(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5,7,9"}  # four "GPUs"; nothing here initialises CUDA
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "x=0,1,2,3",
            f"out={tmp_path}",
            f"hydra.searchpath=[file://{CONF}]",
            "hydra/launcher=local_parallel",
            "hydra.launcher.n_jobs=2",
            "hydra.callbacks.gpu_slots.gpus_per_job=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [(tmp_path / f"job{i}.txt").read_text().split() for i in range(4)]
    by_worker = {}
    for devices, pid in seen:
        assert devices in ("3,5", "7,9"), seen
        by_worker.setdefault(pid, set()).add(devices)
    assert all(len(d) == 1 for d in by_worker.values()), f"a worker keeps its slot: {by_worker}"
    assert {d for v in by_worker.values() for d in v} == {"3,5", "7,9"}, "both slots used"

    too_many = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "x=0,1,2",
            f"out={tmp_path}",
            f"hydra.searchpath=[file://{CONF}]",
            "hydra/launcher=local_parallel",
            "hydra.launcher.n_jobs=3",
            "hydra.callbacks.gpu_slots.gpus_per_job=2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert too_many.returncode != 0 and "needs 6 GPUs, but 4 are visible" in too_many.stderr
