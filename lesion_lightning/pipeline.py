"""VQ-VAE -> encode -> PixelCNN -> sample -> evaluate -> utility for one latent-grid size, resumable.

Each stage runs as its own entry point in a subprocess (exactly the command a user would type,
recorded in pipeline.json), in its own sub-folder of this run's directory. That keeps every stage's
Hydra config, W&B run and DDP launch independent: `trainer=ddp` works per training stage because
Lightning re-launches that stage's script, not the pipeline. A stage whose complete output exists is
skipped, and an interrupted training stage resumes from its `last.ckpt`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lesion_lightning.utils.finite import read_divergence
from lesion_lightning.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
STAGES = ("vqvae", "encode", "pixelcnn", "sample", "evaluate", "utility")
STAGE_PREFIXES = tuple(f"{s}." for s in STAGES)
# seconds between the running stage's time updates in pipeline.json
HEARTBEAT_S = 10.0


def to_overrides(node, prefix: str = "") -> list[str]:
    """Nested mapping -> Hydra `key=value` overrides (lists and strings quoted for the grammar)."""
    if node is None:
        return []
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    out: list[str] = []
    for key, value in container.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value and not any(k.startswith("_") for k in value):
            out += to_overrides(value, f"{full}.")
        else:
            # dotted keys may be new to the stage's config (e.g. data.classes.melanoma); `++` adds or
            # overrides, while top-level keys stay plain so group choices like `logger=csv` still work
            out.append(f"{'++' if '.' in full else ''}{full}={_hydra_value(value)}")
    return out


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    safe = all(c.isalnum() or c in "-_./:+@" for c in text) and text not in ("true", "false", "null")
    return text if safe else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def num_downsamples(image_size: int, grid: int) -> int:
    ratio = image_size / grid
    n = round(math.log2(ratio)) if ratio >= 1 else -1
    if n < 1 or 2**n != ratio:
        raise ValueError(
            f"grid={grid} must be image_size={image_size} divided by 2, 4, 8, ... "
            f"(e.g. 32, 64 or 128 for 256x256 images)"
        )
    return n


def stage_checkpoint(run_dir: str | Path, stage: str) -> Path:
    """Best checkpoint by val/loss of a pipeline run's finished training stage, else its last."""
    ckpts = Path(run_dir) / stage / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    return best[-1] if best else ckpts / "last.ckpt"


class Pipeline:
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.state_path = run_dir / "pipeline.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.state.update({"grid": int(cfg.grid), "image_size": int(cfg.image_size)})
        # a resumed run keeps the W&B group it started with
        self.state.setdefault("group", cfg.group or f"pipeline-{run_dir.name}")
        self.group = self.state["group"]
        self.state.setdefault("stages", {})

    # ---------------------------------------------------------------- stage folders and outputs
    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def checkpoint(self, stage: str) -> Path:
        return stage_checkpoint(self.run_dir, stage)

    def complete(self, stage: str) -> bool:
        if self.state["stages"].get(stage, {}).get("status") != "done":
            return False
        return {
            "vqvae": lambda: self.checkpoint("vqvae").is_file(),
            "encode": lambda: (self.dir("encode") / "indices" / "manifest.json").is_file(),
            "pixelcnn": lambda: self.checkpoint("pixelcnn").is_file(),
            "sample": lambda: (self.dir("sample") / "samples" / "samples.json").is_file(),
            "evaluate": lambda: (self.dir("evaluate") / "metrics.json").is_file(),
            "utility": lambda: (self.dir("utility") / "metrics.json").is_file(),
        }[stage]()

    # ---------------------------------------------------------------- commands
    def command(self, stage: str) -> list[str]:
        cfg = self.cfg
        common = [f"hydra.run.dir={self.dir(stage)}"]
        user = to_overrides(cfg.get(stage) or {})
        if stage == "vqvae":
            data = [f"data={cfg.data.group}", f"data.image_size={cfg.image_size}"]
            if cfg.data.root:
                data.append(f"data.root={cfg.data.root}")
            experiment = [f"experiment={cfg.vqvae_experiment}"] if cfg.vqvae_experiment else []
            args = [
                "lesion_lightning.train",
                *experiment,
                *data,
                # the one place a pipeline run's grid becomes an architecture
                f"model.net.num_downsamples={num_downsamples(cfg.image_size, cfg.grid)}",
                # the grid-free experiment carries no grid tag: W&B filters runs of a sweep by it
                f"tags=[vqvae,grid{cfg.grid}]",
                f"group={self.group}",
                f"logger={cfg.log_with}",
                "task_name=vqvae",
                *self._resume("vqvae"),
                *cfg.train_overrides,
            ]
        elif stage == "encode":
            args = [
                "lesion_lightning.encode",
                f"vqvae_ckpt={self.checkpoint('vqvae')}",
                f"out_dir={self.dir('encode') / 'indices'}",
                "overwrite=true",
            ]
        elif stage == "pixelcnn":
            args = [
                "lesion_lightning.train",
                f"experiment={cfg.pixelcnn_experiment}",
                f"data.root={self.dir('encode') / 'indices'}",
                f"group={self.group}",
                f"logger={cfg.log_with}",
                "task_name=pixelcnn",
                *self._resume("pixelcnn"),
                *cfg.train_overrides,
            ]
        elif stage == "sample":
            args = [
                "lesion_lightning.sample",
                f"pixelcnn_ckpt={self.checkpoint('pixelcnn')}",
                f"vqvae_ckpt={self.checkpoint('vqvae')}",
                f"out_dir={self.dir('sample') / 'samples'}",
                "overwrite=true",
            ]
        elif stage == "utility":
            samples = self.dir("sample") / "samples"
            args = [
                "lesion_lightning.utility",
                f"vqvae_ckpt={self.checkpoint('vqvae')}",
                f"pixelcnn_ckpt={self.checkpoint('pixelcnn')}",
                # the sample stage's lesions are used first; without them the stage generates its own
                *([f"samples_dir={samples}"] if (samples / "samples.json").is_file() else []),
                f"out_dir={self.dir('utility')}",
                f"group={self.group}",
                f"logger={cfg.log_with}",
            ]
        else:
            args = [
                "lesion_lightning.evaluate",
                f"vqvae_ckpt={self.checkpoint('vqvae')}",
                f"pixelcnn_ckpt={self.checkpoint('pixelcnn')}",
                f"index_dir={self.dir('encode') / 'indices'}",
                f"samples_dir={self.dir('sample') / 'samples'}",
                f"out_dir={self.dir('evaluate')}",
                f"group={self.group}",
                f"logger={cfg.log_with}",
            ]
        return [sys.executable, "-m", *args, *common, *user]

    def _resume(self, stage: str) -> list[str]:
        last = self.dir(stage) / "checkpoints" / "last.ckpt"
        return [f"ckpt_path={last}"] if last.is_file() else []

    @staticmethod
    def stage_env() -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if env.get("SLURM_NTASKS") == "1":
            # a one-task SLURM job (hydra/launcher=slurm): let Lightning start the DDP ranks on the
            # job's GPUs itself, through its documented opt-out of the SLURM environment
            env["SLURM_JOB_NAME"] = "interactive"
        return env

    # ---------------------------------------------------------------- running
    def save(self) -> None:
        atomic_write_json(self.state_path, self.state)

    def run(self) -> dict:
        unknown = [s for s in self.cfg.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages={list(self.cfg.stages)}: unknown {unknown}; choose from {list(STAGES)}")
        for stage in STAGES:
            if stage not in self.cfg.stages:
                continue
            if self.complete(stage):
                log.info("[%s] complete, skipped (delete %s to redo it)", stage, self.dir(stage))
                continue
            cmd = self.command(stage)
            entry = self.state["stages"].setdefault(stage, {})
            # time already spent by an earlier attempt counts towards the stage: a failed one, or one
            # killed while "running" (its time up to the last heartbeat below)
            spent = entry.get("seconds", 0.0) if entry.get("status") in ("failed", "running") else 0.0
            entry.update({"status": "running", "command": " ".join(cmd[1:])})
            self.save()
            log.info("[%s] %s", stage, " ".join(cmd[2:]))
            start = time.perf_counter()
            self.dir(stage).mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(cmd, env=self.stage_env())
            try:
                while proc.poll() is None:  # heartbeat: a kill -9 of this process keeps the time so far
                    try:
                        proc.wait(timeout=HEARTBEAT_S)
                    except subprocess.TimeoutExpired:
                        entry["seconds"] = spent + time.perf_counter() - start
                        self.save()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                entry.update({"status": "failed", "returncode": proc.returncode, "seconds": spent + seconds})
                self.save()
                diverged = read_divergence(self.dir(stage))
                if diverged is not None:
                    entry["diverged_at_step"] = diverged.get("step")
                    self.save()
                    raise RuntimeError(
                        f"pipeline stopped at stage `{stage}`: its training diverged, so no later stage "
                        f"ran.\n{diverged.get('message')}\nIn the pipeline, pass the fix as "
                        f"`{stage}.model.lr=...` (or `{stage}.trainer.gradient_clip_val=...`) and re-run "
                        "the same command: the stage resumes from its last finite last.ckpt."
                    )
                raise RuntimeError(
                    f"pipeline stage `{stage}` failed (exit {proc.returncode}); its output is "
                    f"above and in {self.dir(stage)}. Re-run the same command to resume."
                )
            entry.update({"status": "done", "seconds": spent + seconds})
            self.save()
        return self.state


def run_pipeline(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    run_dir = Path(run_dir or cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "pipeline_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    state = Pipeline(cfg, run_dir).run()
    print(f"pipeline grid={cfg.grid} finished: {run_dir}")
    for stage, entry in state["stages"].items():
        print(f"  {stage:9s} {entry.get('status')}  {entry.get('seconds', 0):8.1f} s")
    pipeline = Pipeline(cfg, run_dir)
    for label, path in (
        ("VQ-VAE checkpoint", pipeline.checkpoint("vqvae")),
        ("reconstructions", _latest(pipeline.dir("vqvae") / "images", "reconstructions_epoch*.png")),
        ("PixelCNN checkpoint", pipeline.checkpoint("pixelcnn")),
        ("generated lesions", pipeline.dir("sample") / "samples" / "grid.png"),
        ("metrics", pipeline.dir("evaluate") / "metrics.json"),
        ("utility", pipeline.dir("utility") / "metrics.json"),
    ):
        if path is not None and path.is_file():
            print(f"  {label + ':':20s} {path}")
    utility_table = pipeline.dir("utility") / "table.md"
    if utility_table.is_file():
        print("\nDownstream utility (do the generated lesions help?):\n" + utility_table.read_text())
    return state


def _latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def _stage_overrides_to_force_add(argv: list[str]) -> list[str]:
    """`vqvae.trainer.max_epochs=50` -> `++vqvae.trainer.max_epochs=50`: the stage sections are open-ended."""
    return [f"++{a}" if a.startswith(STAGE_PREFIXES) else a for a in argv]


def sweep_group(cfg: DictConfig) -> DictConfig:
    """One W&B group for every job of a multirun (named after the sweep folder), unless `group` is set."""
    hydra_cfg = HydraConfig.get()
    if cfg.group is None and hydra_cfg.mode == RunMode.MULTIRUN:
        cfg = cfg.copy()
        cfg.group = f"pipeline-{Path(hydra_cfg.sweep.dir).name}"
    return cfg


@hydra.main(version_base="1.3", config_path="../conf", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    run_pipeline(sweep_group(cfg), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *_stage_overrides_to_force_add(sys.argv[1:])]
    main()
