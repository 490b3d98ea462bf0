"""GPUs for a parallel local sweep (``hydra/launcher=local_parallel``): each job slot its own devices.

Every joblib worker otherwise sees all GPUs and Lightning's ``devices=1`` puts every job on GPU 0. This
Hydra callback splits the GPUs visible to the sweep (``CUDA_VISIBLE_DEVICES`` of the launching shell, or
all of them) into ``n_jobs`` slots of ``gpus_per_job`` devices, checked against the visible count, and
sets ``CUDA_VISIBLE_DEVICES`` in each worker to its slot's devices before the job runs. A worker claims
a slot once (an exclusive lock file in the sweep folder, released when the worker exits) and keeps it
for every job it runs: CUDA cannot change a process's devices after it started. Pipeline stages are
subprocesses and inherit the worker's devices.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
SLOTS_ENV = "LESION_GPU_SLOTS"
# this worker's claimed slot: (index, the open lock file that holds it)
_claimed: tuple[int, Any] | None = None


def visible_gpus() -> list[str]:
    """Device ids the sweep may use: the launching shell's CUDA_VISIBLE_DEVICES, else every GPU."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def plan_slots(visible: list[str], n_jobs: int, gpus_per_job: int) -> list[list[str]]:
    """``n_jobs`` disjoint groups of ``gpus_per_job`` devices; a clear error when they do not fit."""
    if not isinstance(gpus_per_job, int) or gpus_per_job < 0:
        raise ValueError(
            f"hydra.callbacks.gpu_slots.gpus_per_job must be an integer >= 0, got {gpus_per_job!r}"
        )
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(
            f"hydra.launcher.n_jobs={n_jobs!r}: a GPU sweep needs a fixed number of parallel jobs (>= 1), "
            "one slot of devices each"
        )
    need = n_jobs * gpus_per_job
    if need > len(visible):
        raise ValueError(
            f"hydra.launcher.n_jobs={n_jobs} x gpus_per_job={gpus_per_job} needs {need} GPUs, but "
            f"{len(visible)} are visible ({','.join(visible) or 'none'}); lower hydra.launcher.n_jobs or "
            "hydra.callbacks.gpu_slots.gpus_per_job, or set CUDA_VISIBLE_DEVICES"
        )
    return [visible[i * gpus_per_job : (i + 1) * gpus_per_job] for i in range(n_jobs)]


def claim_slot(lock_dir: Path, num_slots: int) -> tuple[int, Any]:
    """The first slot no other live worker holds (flock is dropped by the kernel when a worker dies)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(num_slots):
        handle = open(lock_dir / f".gpu_slot_{slot}.lock", "w")  # noqa: SIM115 - held for the worker's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    raise RuntimeError(
        f"all {num_slots} GPU slots in {lock_dir} are held: more workers than hydra.launcher.n_jobs?"
    )


class GpuSlots(Callback):
    """Hydra callback (``hydra.callbacks.gpu_slots``): one group of GPUs per parallel job slot.

    ``gpus_per_job=0`` leaves the devices alone (CPU sweeps). With no GPU visible it does nothing either.
    """

    def __init__(self, gpus_per_job: int = 1, n_jobs: int = 1) -> None:
        self.gpus_per_job = gpus_per_job
        self.n_jobs = n_jobs

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.gpus_per_job == 0:
            return
        visible = visible_gpus()
        if not visible:
            log.info("gpu_slots: no GPU visible; jobs run without device assignment")
            return
        try:
            slots = plan_slots(visible, self.n_jobs, self.gpus_per_job)
        except ValueError as err:
            # Hydra turns a callback's Exception into a warning and would start the jobs anyway
            raise SystemExit(f"hydra/launcher=local_parallel: {err}") from err
        # the joblib workers are started after this hook and inherit the environment
        os.environ[SLOTS_ENV] = json.dumps(slots)
        log.info("gpu_slots: %d parallel jobs on devices %s", self.n_jobs, slots)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _claimed
        raw = os.environ.get(SLOTS_ENV)
        if not raw:
            return
        slots = json.loads(raw)
        if _claimed is None:
            _claimed = claim_slot(Path(config.hydra.sweep.dir), len(slots))
        devices = ",".join(slots[_claimed[0]])
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        log.info(
            "gpu_slots: job %s runs in slot %d on CUDA_VISIBLE_DEVICES=%s",
            config.hydra.job.num,
            _claimed[0],
            devices,
        )
