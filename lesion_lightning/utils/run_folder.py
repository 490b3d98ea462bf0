"""The pipeline's run folder: its stages, where each puts its outputs, and `pipeline.json`.

One run folder per latent-grid size (a multirun has one per job folder)::

    <run>/pipeline.json             PipelineRecord: grid, group, overrides, per stage status/seconds/error
    <run>/pipeline_config.yaml      the resolved pipeline config
    <run>/vqvae/checkpoints/        best-*.ckpt, last.ckpt
    <run>/encode/indices/           the index dataset (manifest.json last)
    <run>/pixelcnn/checkpoints/
    <run>/sample/samples/           sample_*.png, grid.png, samples.json
    <run>/evaluate/                 metrics.json, reconstructions.png, memorization.png
    <run>/utility/                  metrics.json, table.md, utility.png, classifiers/

The pipeline writes it, the sweep report, the guidance benchmark and the tests read it: nobody else
spells these paths or `pipeline.json`'s keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesion_lightning.utils.io import atomic_write_json, read_json_object

# pipeline order; `stages=[...]` picks a subset
STAGES = ("vqvae", "encode", "pixelcnn", "sample", "evaluate", "utility")
TRAINING_STAGES = ("vqvae", "pixelcnn")
PIPELINE_JSON = "pipeline.json"
PIPELINE_CONFIG = "pipeline_config.yaml"
STATUSES = ("running", "done", "failed")


def stage_checkpoint(run_dir: str | Path, stage: str) -> Path:
    """Best checkpoint by val/loss of a pipeline run's finished training stage, else its last."""
    ckpts = Path(run_dir) / stage / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    return best[-1] if best else ckpts / "last.ckpt"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one pipeline run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; the stages are {list(STAGES)}")
        return self.root / stage

    def checkpoint(self, stage: str) -> Path:
        return stage_checkpoint(self.root, stage)

    def last_checkpoint(self, stage: str) -> Path:
        return self.stage_dir(stage) / "checkpoints" / "last.ckpt"

    @property
    def pipeline_json(self) -> Path:
        return self.root / PIPELINE_JSON

    @property
    def pipeline_config(self) -> Path:
        return self.root / PIPELINE_CONFIG

    @property
    def index_dir(self) -> Path:
        return self.stage_dir("encode") / "indices"

    @property
    def samples_dir(self) -> Path:
        return self.stage_dir("sample") / "samples"

    @property
    def samples_json(self) -> Path:
        return self.samples_dir / "samples.json"

    @property
    def samples_grid(self) -> Path:
        return self.samples_dir / "grid.png"

    @property
    def evaluate_metrics(self) -> Path:
        return self.stage_dir("evaluate") / "metrics.json"

    @property
    def reconstructions(self) -> Path:
        return self.stage_dir("evaluate") / "reconstructions.png"

    @property
    def memorization_picture(self) -> Path:
        return self.stage_dir("evaluate") / "memorization.png"

    @property
    def vqvae_images(self) -> Path:
        return self.stage_dir("vqvae") / "images"

    @property
    def utility_metrics(self) -> Path:
        return self.stage_dir("utility") / "metrics.json"

    @property
    def utility_table(self) -> Path:
        return self.stage_dir("utility") / "table.md"

    @property
    def utility_classifiers(self) -> Path:
        return self.stage_dir("utility") / "classifiers"

    def output_marker(self, stage: str) -> Path:
        """The file a finished stage leaves last: its presence (with status done) means complete."""
        return {
            "vqvae": lambda: self.checkpoint("vqvae"),
            "encode": lambda: self.index_dir / "manifest.json",
            "pixelcnn": lambda: self.checkpoint("pixelcnn"),
            "sample": lambda: self.samples_json,
            "evaluate": lambda: self.evaluate_metrics,
            "utility": lambda: self.utility_metrics,
        }[stage]()


@dataclass
class StageRecord:
    """One stage's line in pipeline.json."""

    status: str | None = None
    seconds: float | None = None
    command: str | None = None
    returncode: int | None = None
    error: str | None = None  # the failed stage's last error line, for the report's notes

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: Any, where: str) -> StageRecord:
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        status, seconds = data.get("status"), data.get("seconds")
        if status is not None and status not in STATUSES:
            raise ValueError(f"{where}: status {status!r} is not one of {list(STATUSES)}")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)):
            raise ValueError(f"{where}: seconds {seconds!r} is not a number")
        returncode = data.get("returncode")
        return cls(
            status=status,
            seconds=float(seconds) if seconds is not None else None,
            command=data.get("command"),
            returncode=int(returncode) if isinstance(returncode, int) else None,
            error=str(data["error"]) if data.get("error") else None,
        )


@dataclass
class PipelineRecord:
    """pipeline.json: what the pipeline ran in a run folder, written after every stage transition."""

    grid: int | list[int] | None = None
    image_size: int | None = None
    group: str | None = None
    # the pipeline's own command-line overrides (Hydra's task overrides), newest run's
    overrides: list[str] = field(default_factory=list)
    stages: dict[str, StageRecord] = field(default_factory=dict)

    def stage(self, name: str) -> StageRecord:
        return self.stages.setdefault(name, StageRecord())

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "image_size": self.image_size,
            "group": self.group,
            "overrides": list(self.overrides),
            "stages": {name: s.to_json() for name, s in self.stages.items()},
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, where: str = PIPELINE_JSON) -> PipelineRecord:
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        stages = data.get("stages") or {}
        if not isinstance(stages, dict):
            raise ValueError(f"{where}: `stages` is not a mapping")
        overrides = data.get("overrides") or []
        if not isinstance(overrides, list):
            raise ValueError(f"{where}: `overrides` is not a list")
        return cls(
            grid=data.get("grid"),
            image_size=data.get("image_size"),
            group=data.get("group"),
            overrides=[str(o) for o in overrides],
            stages={
                str(name): StageRecord.from_json(info, f"{where}: stage `{name}`")
                for name, info in stages.items()
            },
        )

    @classmethod
    def read(cls, path: str | Path) -> PipelineRecord:
        """The record at `path`; ValueError (naming the file) when it is unreadable or malformed."""
        path = Path(path)
        return cls.from_json(read_json_object(path, "delete it to start the run afresh"), str(path))

    @classmethod
    def read_or_new(cls, path: str | Path) -> PipelineRecord:
        return cls.read(path) if Path(path).is_file() else cls()


def grid_side(grid: Any) -> int | None:
    """pipeline.json's grid (64 or [64, 64]) -> its side, for sorting and plotting."""
    if isinstance(grid, int) and not isinstance(grid, bool):
        return grid
    if isinstance(grid, list | tuple) and grid and all(isinstance(g, int) for g in grid):
        return int(grid[0])
    return None
