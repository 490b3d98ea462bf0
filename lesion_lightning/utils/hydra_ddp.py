"""Make Lightning's DDP re-launch of a Hydra entry point land in this job's run directory.

Lightning starts ranks > 0 by re-running `sys.argv` with `hydra.run.dir=<HydraConfig.run.dir>`. In a
multirun that would re-launch the whole sweep (`-m grid=32,64`) from every rank and, since the
multirun's `run.dir` is an unresolved `${now:...}` pattern, into a different folder. Rewriting argv
to this job's own overrides and pinning `run.dir` to its output folder makes every rank of every
sweep job start the same single run in the same directory.
"""

from __future__ import annotations

import os
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def pin_ddp_relaunch_to_this_job() -> None:
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *_config_location_args(sys.argv[1:]), *hydra_cfg.overrides.task]
    root = HydraConfig.instance().cfg
    nodes = (root, root.hydra, root.hydra.run)
    flags = [node._get_node_flag("readonly") for node in nodes]
    for node in nodes:
        OmegaConf.set_readonly(node, False)
    root.hydra.run.dir = hydra_cfg.runtime.output_dir
    for node, flag in zip(nodes, flags, strict=True):
        OmegaConf.set_readonly(node, flag)


_LOCATION_FLAGS = ("-cn", "-cp", "-cd", "--config-name", "--config-path", "--config-dir")


def _config_location_args(argv: list[str]) -> list[str]:
    """Keep `-cn NAME`, `--config-dir=DIR`, ... so every rank composes the same primary config."""
    kept: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _LOCATION_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
        elif arg.startswith(tuple(f"{flag}=" for flag in _LOCATION_FLAGS)):
            kept.append(arg)
    return kept


# Set by Lightning (or torchrun/SLURM) for processes it starts; the launching process has none.
_STARTED_AS_RANK = "LOCAL_RANK" in os.environ
_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def reset_distributed_after_job() -> None:
    """Let the next multirun job launch its own ranks.

    Lightning leaves its launch variables (LOCAL_RANK, MASTER_PORT, ...) in the launching process's
    environment and the process group open; the next job in the same process would then believe it
    was started by a launcher and talk to the previous job's dead ranks.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not _STARTED_AS_RANK:
        for var in _LAUNCH_VARS:
            os.environ.pop(var, None)
