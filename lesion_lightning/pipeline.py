"""VQ-VAE -> encode -> PixelCNN -> sample -> evaluate -> utility for one latent-grid size, resumable.

Each stage runs as its own entry point in a subprocess (exactly the command a user would type,
recorded in pipeline.json), in its own sub-folder of this run's directory. That keeps every stage's
Hydra config, W&B run and DDP launch independent: `trainer=ddp` works per training stage because
Lightning re-launches that stage's script, not the pipeline. A stage whose complete output exists is
skipped, and an interrupted training stage resumes from its `last.ckpt`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lesion_lightning.utils.config import to_overrides
from lesion_lightning.utils.io import atomic_write_text
from lesion_lightning.utils.run_folder import STAGES, PipelineRecord, RunFolder

log = logging.getLogger(__name__)
STAGE_PREFIXES = tuple(f"{s}." for s in STAGES)
# seconds between the running stage's time updates in pipeline.json
HEARTBEAT_S = 10.0


def num_downsamples(image_size: int, grid: int) -> int:
    ratio = image_size / grid
    n = round(math.log2(ratio)) if ratio >= 1 else -1
    if n < 1 or 2**n != ratio:
        raise ValueError(
            f"grid={grid} must be image_size={image_size} divided by 2, 4, 8, ... "
            f"(e.g. 32, 64 or 128 for 256x256 images)"
        )
    return n


class Pipeline:
    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> None:
        self.cfg = cfg
        self.folder = RunFolder(run_dir)
        self.run_dir = self.folder.root
        self.record = PipelineRecord.read_or_new(self.folder.pipeline_json)
        self.record.grid, self.record.image_size = int(cfg.grid), int(cfg.image_size)
        if overrides is not None:
            self.record.overrides = list(overrides)
        # a resumed run keeps the W&B group it started with
        self.record.group = self.record.group or cfg.group or f"pipeline-{run_dir.name}"
        self.group = self.record.group

    # ---------------------------------------------------------------- stage folders and outputs
    def dir(self, stage: str) -> Path:
        return self.folder.stage_dir(stage)

    def checkpoint(self, stage: str) -> Path:
        return self.folder.checkpoint(stage)

    def complete(self, stage: str) -> bool:
        done = self.record.stages.get(stage)
        return done is not None and done.status == "done" and self.folder.output_marker(stage).is_file()

    # ---------------------------------------------------------------- commands, one step per stage
    def command(self, stage: str) -> list[str]:
        """The stage's command line: `python -m lesion_lightning.<command> ...` as a user would type it."""
        args = getattr(self, f"_{stage}_args")()
        user = to_overrides(self.cfg.get(stage) or {})
        return [sys.executable, "-m", *args, f"hydra.run.dir={self.dir(stage)}", *user]

    def _logging(self) -> list[str]:
        return [f"group={self.group}", f"logger={self.cfg.log_with}"]

    def _pair(self) -> list[str]:
        return [f"vqvae_ckpt={self.checkpoint('vqvae')}", f"pixelcnn_ckpt={self.checkpoint('pixelcnn')}"]

    def _vqvae_args(self) -> list[str]:
        cfg = self.cfg
        data = [f"data={cfg.data.group}", f"data.image_size={cfg.image_size}"]
        if cfg.data.root:
            data.append(f"data.root={cfg.data.root}")
        experiment = [f"experiment={cfg.vqvae_experiment}"] if cfg.vqvae_experiment else []
        return [
            "lesion_lightning.train",
            *experiment,
            *data,
            # the one place a pipeline run's grid becomes an architecture
            f"model.net.num_downsamples={num_downsamples(cfg.image_size, cfg.grid)}",
            # the grid-free experiment carries no grid tag: W&B filters runs of a sweep by it
            f"tags=[vqvae,grid{cfg.grid}]",
            *self._logging(),
            "task_name=vqvae",
            *self._resume("vqvae"),
            *cfg.train_overrides,
        ]

    def _encode_args(self) -> list[str]:
        return [
            "lesion_lightning.encode",
            f"vqvae_ckpt={self.checkpoint('vqvae')}",
            f"out_dir={self.folder.index_dir}",
            "overwrite=true",
        ]

    def _pixelcnn_args(self) -> list[str]:
        return [
            "lesion_lightning.train",
            f"experiment={self.cfg.pixelcnn_experiment}",
            f"data.root={self.folder.index_dir}",
            *self._logging(),
            "task_name=pixelcnn",
            *self._resume("pixelcnn"),
            *self.cfg.train_overrides,
        ]

    def _sample_args(self) -> list[str]:
        return [
            "lesion_lightning.sample",
            *self._pair()[::-1],
            f"out_dir={self.folder.samples_dir}",
            "overwrite=true",
        ]

    def _evaluate_args(self) -> list[str]:
        return [
            "lesion_lightning.evaluate",
            *self._pair(),
            f"index_dir={self.folder.index_dir}",
            f"samples_dir={self.folder.samples_dir}",
            f"out_dir={self.dir('evaluate')}",
            *self._logging(),
        ]

    def _utility_args(self) -> list[str]:
        samples = self.folder.samples_json
        return [
            "lesion_lightning.utility",
            *self._pair(),
            # the sample stage's lesions are used first; without them the stage generates its own
            *([f"samples_dir={samples.parent}"] if samples.is_file() else []),
            f"out_dir={self.dir('utility')}",
            *self._logging(),
        ]

    def _resume(self, stage: str) -> list[str]:
        last = self.folder.last_checkpoint(stage)
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
        self.record.save(self.folder.pipeline_json)

    def run(self) -> dict:
        """Run the configured stages; returns pipeline.json's content."""
        unknown = [s for s in self.cfg.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages={list(self.cfg.stages)}: unknown {unknown}; choose from {list(STAGES)}")
        self.save()  # the overrides of this invocation, before any stage runs
        for stage in STAGES:
            if stage not in self.cfg.stages:
                continue
            if self.complete(stage):
                log.info("[%s] complete, skipped (delete %s to redo it)", stage, self.dir(stage))
                continue
            self.run_stage(stage)
        return self.record.to_json()

    def run_stage(self, stage: str) -> None:
        """Run one stage's command in a subprocess, recording its status, time and failure."""
        cmd = self.command(stage)
        entry = self.record.stage(stage)
        # time already spent by an earlier attempt counts towards the stage: a failed one, or one
        # killed while "running" (its time up to the last heartbeat below)
        spent = (entry.seconds or 0.0) if entry.status in ("failed", "running") else 0.0
        entry.status, entry.command, entry.returncode, entry.error = "running", " ".join(cmd[1:]), None, None
        self.save()
        log.info("[%s] %s", stage, " ".join(cmd[2:]))
        start = time.perf_counter()
        self.dir(stage).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(cmd, env=self.stage_env(), stderr=subprocess.PIPE)
        tail = _StderrTail(proc.stderr)
        try:
            while proc.poll() is None:  # heartbeat: a kill -9 of this process keeps the time so far
                try:
                    proc.wait(timeout=HEARTBEAT_S)
                except subprocess.TimeoutExpired:
                    entry.seconds = spent + time.perf_counter() - start
                    self.save()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            tail.join()
        entry.seconds = spent + time.perf_counter() - start
        if proc.returncode != 0:
            entry.status, entry.returncode = "failed", proc.returncode
            entry.error = tail.error() or f"exit {proc.returncode}"
            self.save()
            raise RuntimeError(
                f"pipeline stage `{stage}` failed (exit {proc.returncode}); its output is "
                f"above and in {self.dir(stage)}. Re-run the same command to resume."
            )
        entry.status = "done"
        self.save()


class _StderrTail:
    """Copies a stage's stderr through to ours as it comes (progress bars included: raw chunks, not
    lines), keeping its last bytes so a failure's exception line can go into pipeline.json."""

    KEEP = 16_384
    # the exception line of a traceback: `RuntimeError: ...`, `omegaconf.errors.X: ...`
    _EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")

    def __init__(self, stream) -> None:
        self.tail = b""
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        out = getattr(sys.stderr, "buffer", None)
        while chunk := os.read(stream.fileno(), 4096):
            if out is not None:
                out.write(chunk)
                out.flush()
            else:  # a captured sys.stderr without bytes (pytest's capsys)
                sys.stderr.write(chunk.decode(errors="replace"))
            self.tail = (self.tail + chunk)[-self.KEEP :]
        stream.close()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def error(self) -> str | None:
        """The last exception line (Hydra ends with a hint about HYDRA_FULL_ERROR, which is skipped)."""
        lines = self.tail.decode(errors="replace").replace("\r", "\n").splitlines()
        found = [line.strip() for line in lines if self._EXCEPTION.match(line.strip())]
        return found[-1][:500] if found else None


def run_pipeline(
    cfg: DictConfig, run_dir: str | Path | None = None, overrides: list[str] | None = None
) -> dict:
    """Run the configured stages into `run_dir`; `overrides` (the command line's) go into pipeline.json."""
    run_dir = Path(run_dir or cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(cfg, run_dir, overrides)
    atomic_write_text(pipeline.folder.pipeline_config, OmegaConf.to_yaml(cfg, resolve=True))
    pipeline.run()
    record = pipeline.record
    print(f"pipeline grid={cfg.grid} finished: {run_dir}")
    for stage, entry in record.stages.items():
        print(f"  {stage:9s} {entry.status}  {entry.seconds or 0:8.1f} s")
    folder = pipeline.folder
    for label, path in (
        ("VQ-VAE checkpoint", folder.checkpoint("vqvae")),
        ("reconstructions", _latest(folder.vqvae_images, "reconstructions_epoch*.png")),
        ("PixelCNN checkpoint", folder.checkpoint("pixelcnn")),
        ("generated lesions", folder.samples_grid),
        ("metrics", folder.evaluate_metrics),
        ("utility", folder.utility_metrics),
    ):
        if path is not None and path.is_file():
            print(f"  {label + ':':20s} {path}")
    if folder.utility_table.is_file():
        print("\nDownstream utility (do the generated lesions help?):\n" + folder.utility_table.read_text())
    return record.to_json()


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
    hydra_cfg = HydraConfig.get()
    run_pipeline(sweep_group(cfg), hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *_stage_overrides_to_force_add(sys.argv[1:])]
    main()
