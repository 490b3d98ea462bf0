"""The report's experiment as one command: a CPU multirun over two tiny grids, resume after a failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelpers import run_cli

from lesion_lightning.pipeline import _stage_overrides_to_force_add, num_downsamples
from lesion_lightning.utils.config import hydra_value as _hydra_value
from lesion_lightning.utils.config import to_overrides

TINY = [
    "preset=quickstart",
    "image_size=32",
    "vqvae.data.synthetic.num_images=24",
    "vqvae.data.batch_size=8",
    "vqvae.model.net.hidden_channels=16",
    "vqvae.model.net.res_channels=8",
    "vqvae.model.net.codebook_size=16",
    "vqvae.model.net.code_dim=8",
    "vqvae.trainer.max_epochs=1",
    "vqvae.logger=csv",
    "vqvae.callbacks.rich_progress_bar=null",
    "pixelcnn.model.net.channels=8",
    "pixelcnn.model.net.num_layers=2",
    "pixelcnn.trainer.max_epochs=1",
    "pixelcnn.logger=csv",
    "pixelcnn.callbacks.rich_progress_bar=null",
    "pixelcnn.data.batch_size=8",
    "sample.num_samples=4",
    "utility.steps=2",
    "utility.seeds=2",
    "utility.batch_size=8",
    "utility.synthetic_per_class=2",
    "utility.synthetic_only_per_class=2",
    "utility.bootstrap.num_resamples=20",
]


def test_grid_to_downsampling_and_override_formatting() -> None:
    assert [num_downsamples(256, g) for g in (32, 64, 128)] == [3, 2, 1]
    with pytest.raises(ValueError, match="grid=48"):
        num_downsamples(256, 48)
    assert to_overrides({"trainer": {"max_epochs": 5, "devices": [0, 1]}, "logger": "csv", "ckpt": None}) == [
        "++trainer.max_epochs=5",
        "++trainer.devices=[0,1]",
        "logger=csv",
        "ckpt=null",
    ]
    assert _hydra_value("a b") == "'a b'" and _hydra_value(True) == "true"
    assert to_overrides({"data": {"classes": {"melanoma": ["melanoma"], "other": "*"}}}) == [
        "++data.classes.melanoma=[melanoma]",
        "++data.classes.other='*'",
    ]
    assert _stage_overrides_to_force_add(["grid=8", "vqvae.trainer.max_epochs=3"]) == [
        "grid=8",
        "++vqvae.trainer.max_epochs=3",
    ]


@pytest.mark.slow
def test_multirun_over_two_grids_writes_report(tmp_path: Path) -> None:
    proc = run_cli(
        "lesion_lightning.pipeline",
        "-m",
        *TINY,
        "grid=4,8",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        timeout=900,
    )
    sweep = tmp_path / "sweep"
    groups = set()
    for job, grid in (("0", 4), ("1", 8)):
        state = json.loads((sweep / job / "pipeline.json").read_text())
        assert state["grid"] == grid
        groups.add(state["group"])
        assert {s: e["status"] for s, e in state["stages"].items()} == dict.fromkeys(
            ("vqvae", "encode", "pixelcnn", "sample", "evaluate", "utility"), "done"
        )
        assert json.loads((sweep / job / "encode" / "indices" / "manifest.json").read_text())[
            "grid_size"
        ] == [grid, grid]
        assert len(list((sweep / job / "sample" / "samples").glob("sample_*.png"))) == 4
    assert groups == {"pipeline-sweep"}, "every job of a sweep logs into one W&B group"
    report = (sweep / "report.md").read_text()
    assert "sweep report" in proc.stdout
    rows = [line for line in report.splitlines() if re.match(r"^\|\s*(4|8)(x\d+)?\s*\|", line)]
    assert len(rows) >= 2, report
    for link in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (sweep / link).is_file(), f"report links a missing picture: {link}"
    assert (sweep / "metrics_vs_grid.png").is_file()


@pytest.mark.slow
def test_failed_pipeline_resumes_without_redoing_finished_stages(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "lesion_lightning.pipeline", *TINY, "grid=8", "hydra.run.dir=run"]
    # the prior's stage fails (an invalid kernel size), after VQ-VAE and encode finished
    failed = subprocess.run(
        [*args, "pixelcnn.model.net.kernel_size=4"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert failed.returncode != 0
    run = tmp_path / "run"
    state = json.loads((run / "pipeline.json").read_text())
    assert state["stages"]["vqvae"]["status"] == "done" and state["stages"]["pixelcnn"]["status"] == "failed"
    vq_ckpt = next((run / "vqvae" / "checkpoints").glob("best-*.ckpt"))
    manifest = run / "encode" / "indices" / "manifest.json"
    before = (vq_ckpt.stat().st_mtime_ns, manifest.stat().st_mtime_ns)

    proc = run_cli(
        "lesion_lightning.pipeline", *TINY, "grid=8", "hydra.run.dir=run", cwd=tmp_path, timeout=600
    )
    assert (vq_ckpt.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == before, "finished stages not redone"
    assert "[vqvae] complete, skipped" in proc.stdout + proc.stderr
    state = json.loads((run / "pipeline.json").read_text())
    assert all(e["status"] == "done" for e in state["stages"].values())
    assert (run / "sample" / "samples" / "grid.png").is_file() and (
        run / "evaluate" / "metrics.json"
    ).is_file()


@pytest.mark.slow
def test_interrupted_training_stage_continues_from_last_checkpoint(tmp_path: Path) -> None:
    args = [*TINY, "grid=8", "stages=[vqvae]", "hydra.run.dir=run"]
    run_cli("lesion_lightning.pipeline", *args, cwd=tmp_path)
    run = tmp_path / "run"
    last = run / "vqvae" / "checkpoints" / "last.ckpt"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    # as if the job had been killed after its last checkpoint
    state = json.loads((run / "pipeline.json").read_text())
    state["stages"]["vqvae"]["status"] = "failed"
    (run / "pipeline.json").write_text(json.dumps(state))

    run_cli("lesion_lightning.pipeline", *args, "vqvae.trainer.max_epochs=2", cwd=tmp_path)
    state = json.loads((run / "pipeline.json").read_text())
    assert f"ckpt_path={last}" in state["stages"]["vqvae"]["command"]
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * step
    assert state["stages"]["vqvae"]["status"] == "done"


def test_a_failed_stage_and_the_overrides_are_recorded_for_the_report(tmp_path: Path) -> None:
    """pipeline.json carries the failing stage's exception line and the run's overrides (the report's
    notes and "Overrides" section read them through the same PipelineRecord)."""
    from clihelpers import compose_config

    from lesion_lightning.pipeline import run_pipeline
    from lesion_lightning.report.collect import collect_run
    from lesion_lightning.utils.run_folder import PipelineRecord

    overrides = ["preset=quickstart", "grid=8", "image_size=32", "stages=[encode]", "log_with=none"]
    cfg = compose_config("pipeline", overrides, tmp_path)
    with pytest.raises(RuntimeError, match="stage `encode` failed"):
        run_pipeline(cfg, tmp_path, overrides)  # no VQ-VAE checkpoint: encode exits with an error
    record = PipelineRecord.read(tmp_path / "pipeline.json")
    encode = record.stages["encode"]
    assert encode.status == "failed" and encode.returncode not in (None, 0)
    assert encode.error and "Error" in encode.error and "last.ckpt" in encode.error, encode.error
    assert record.overrides == overrides
    run = collect_run(tmp_path / "pipeline.json")
    assert f"stage `encode` failed: {encode.error}" in run["notes"] and run["overrides"] == overrides
