"""report: a sweep folder laid out like the pipeline's -> report.md with rows, picture links and a plot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lesion_lightning.report.__main__ import main
from lesion_lightning.report.publish import write_report
from lesion_lightning.utils.run_folder import STAGES, PipelineRecord, StageRecord


def _png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 10), color).save(path)


def _run(sweep: Path, job: str, grid: int, metrics: dict | None, failed: str | None = None) -> Path:
    """One pipeline run folder: pipeline.json, evaluate/metrics.json (if given), pictures, samples.json."""
    run = sweep / job
    # the pipeline's own writer: what it records, and nothing it does not, is what the report reads
    record = PipelineRecord(grid=grid, image_size=256, overrides=[f"grid={grid}"])
    for i, stage in enumerate(STAGES[:5]):  # a run with stages=[vqvae, ..., evaluate]
        record.stages[stage] = StageRecord(status="done", seconds=10.0 * (i + 1) * grid / 32)
    if failed:
        record.stages[failed] = StageRecord(
            status="failed", returncode=1, error="RuntimeError: out of memory"
        )
    run.mkdir(parents=True)
    record.save(run / "pipeline.json")
    _png(run / "sample" / "samples" / "grid.png", (200, 100, 100))
    (run / "sample" / "samples" / "samples.json").write_text(
        json.dumps({"seconds_per_image": 0.125 * grid / 32})
    )
    if metrics is not None:
        (run / "evaluate").mkdir()
        (run / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
        _png(run / "evaluate" / "reconstructions.png", (100, 200, 100))
    return run


def _metrics(psnr: float, bpd: float, fid: float | None, n_generated: int = 4096, grid: int = 32) -> dict:
    generation = (
        {
            "fid": fid,
            "fid_ci": [fid - 1.5, fid + 2.0],
            "kid_mean": 0.0123,
            "kid_std": 0.0004,
            "n_generated": n_generated,
            "n_real": 1000,
            "feature_extractor": "inception-v3-compat/2048",
            "precision": 0.61,
            "recall": 0.42,
            "prc_k": 3,
            "per_class": {
                "nevus": {"fid": fid + 3, "fid_ci": [fid, fid + 6], "n_generated": 300, "n_real": 700},
                "melanoma": {"skipped": "1 generated"},
            },
        }
        if fid is not None
        else {"skipped": "no weights"}
    )
    memorization = {
        "code_space": {
            "memorized_fraction": 0.0125,
            "memorized_fraction_ci": [0.005, 0.02],
            "n_generated": n_generated,
            "n_test": 500,
            "percentile": 1.0,
        },
        "feature_space": {"skipped": "no feature extractor"},
    }
    return {
        "reconstruction": {
            "psnr": psnr,
            "psnr_8bit": psnr + 6.0,
            "normalization": "minmax",
            "ssim": 0.8123,
            "codebook_usage": 0.5,
            "perplexity": 200.0,
            "mse": 0.01,
        },
        "prior": {
            "bits_per_dim": bpd,
            "bits_per_dim_ci": [bpd - 0.01, bpd + 0.01],
            "bits_per_image": bpd * grid * grid,
            "marginal_bits_per_dim": 7.5,
            # what the prior checkpoint recorded at the validation that selected it
            "checkpoint_validation": {"val_bits_per_dim": bpd - 0.125, "gap_bits_per_dim": 0.25},
        },
        "generation": generation,
        "memorization": memorization,
    }


def _rows(report: str) -> dict[str, list[str]]:
    """First table of the report: grid label -> cells."""
    table = report.split("## Generation")[0]
    rows = [line for line in table.splitlines() if re.match(r"\| \d+x\d+ \|", line)]
    return {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows}


def test_report_has_one_row_per_grid_pictures_and_plot(tmp_path):
    sweep = tmp_path / "sweep"
    _run(sweep, "1", 64, _metrics(psnr=31.5, bpd=5.25, fid=42.0, grid=64))
    _run(sweep, "0", 32, _metrics(psnr=27.25, bpd=6.5, fid=None))
    path = write_report(sweep)
    assert path == sweep.resolve() / "report.md"
    report = path.read_text()
    rows = _rows(report)
    assert list(rows) == ["32x32", "64x64"]  # sorted by grid size
    assert "27.25" in rows["32x32"] and "6.500 [6.490, 6.510]" in rows["32x32"] and "7.500" in rows["32x32"]
    # bits per image = bits/dim x H x W: the number comparable across grid sizes
    assert "6656" in rows["32x32"] and "21504" in rows["64x64"]
    assert rows["32x32"].count("skipped") == 2  # FID and KID: skipped, no number
    # 4096 samples against 1000 real test images: the real side is too small for a publishable FID
    assert (
        "31.50" in rows["64x64"] and "unreliable (n_real=1000 < 2048): 42.00 [40.50, 44.00]" in rows["64x64"]
    )
    assert "unreliable (n_real=1000 < 2048): 0.0123 ± 0.0004" in rows["64x64"]
    assert "50% (ppl 200.0)" in rows["64x64"]
    assert rows["32x32"][15:17] == ["10.0 s", "30.0 s"]  # VQ-VAE and PixelCNN training time
    # the scale of the image metrics, and PSNR on the original 8-bit scale beside the stretched one
    assert rows["64x64"][2:5] == ["minmax", "31.50", "37.50"]
    # the prior row: val bits/dim of the selected checkpoint and the train-val gap, beside test bits/dim
    assert rows["64x64"][7:10] == ["5.250 [5.240, 5.260]", "5.125", "+0.250"]
    generation = report.split("## Generation")[1].split("## Stages")[0]
    assert (
        "| 64x64 | 4096 / 1000 | inception-v3-compat/2048 | minmax | unreliable (n_real=1000 < 2048): 42.00 [40.50, 44.00] |"
        in generation
    )
    assert "0.610 (k=3) | 0.420 | 1.2% [0.5%, 2.0%] of 4096 | — |" in generation
    # a per-class FID from 300 samples is flagged, not printed bare
    assert "| 64x64 | nevus | 300 / 700 | unreliable (n=300 < 2048): 45.00 [42.00, 48.00] |" in generation
    assert "melanoma" not in generation
    assert "0.125 s" in rows["32x32"]  # sampling time per image

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert "0/evaluate/reconstructions.png" in links and "1/sample/samples/grid.png" in links
    for link in links:  # every picture link resolves relative to the report
        assert (path.parent / link).is_file(), link
    plot = sweep / "metrics_vs_grid.png"
    assert "metrics_vs_grid.png" in links
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert not list(sweep.glob(".*tmp*"))  # written via temporary names, none left behind
    # the overrides the pipeline recorded, and the stage it was not asked to run
    assert "## Overrides" in report and "- 64x64: `grid=64`" in report
    assert "stage `utility` not recorded in pipeline.json" in report


def test_missing_pieces_render_as_dashes_with_a_note(tmp_path):
    sweep = tmp_path / "multirun"
    _run(sweep, "0", 32, _metrics(psnr=27.0, bpd=6.0, fid=10.0))
    _run(sweep, "1", 128, None, failed="evaluate")  # evaluate failed: no metrics.json, no reconstructions
    small = _run(sweep, "3", 16, _metrics(psnr=20.0, bpd=5.0, fid=80.0, n_generated=256))
    (small / "evaluate" / "metrics.json").write_text(
        json.dumps({**_metrics(psnr=20.0, bpd=5.0, fid=80.0, n_generated=256)})
    )
    bare = sweep / "2"
    bare.mkdir()
    PipelineRecord(grid=64, stages={"vqvae": StageRecord(status="running")}).save(bare / "pipeline.json")
    report = write_report(sweep).read_text()
    rows = _rows(report)
    assert set(rows) == {"16x16", "32x32", "64x64", "128x128"}
    assert "unreliable (n=256 < 2048): 80.00 [78.50, 82.00]" in rows["16x16"]  # too few samples: flagged
    # normalization unknown without metrics.json; PSNR (x2), SSIM, usage, bits/dim, val, gap, +image x2, FID, KID
    assert rows["128x128"][2:15] == ["not recorded"] + ["—"] * 12
    assert rows["128x128"][-1] == "0.5 s"  # what did finish still shows
    assert rows["64x64"][2:] == ["not recorded"] + ["—"] * 15
    assert "stage `evaluate` failed: RuntimeError: out of memory" in report
    assert "stage `vqvae` running" in report and "stage `pixelcnn` not recorded" in report
    assert (
        "| 128x128 | — | ![128x128 samples](1/sample/samples/grid.png) | — |" in report
    )  # dashes for the others
    assert (sweep / "metrics_vs_grid.png").is_file()


def test_fid_cells_flag_a_small_real_side_and_a_stand_in_extractor(tmp_path):
    """reliable = min(n_generated, n_real) >= 2048 on Inception features; the cell says which side failed."""
    sweep = tmp_path / "multirun"
    big = _metrics(psnr=27.0, bpd=6.0, fid=10.0)
    big["generation"].update(n_generated=5000, n_real=3000)
    _run(sweep, "0", 32, big)
    stand_in = _metrics(psnr=27.0, bpd=6.0, fid=12.0)
    stand_in["generation"].update(n_generated=5000, n_real=3000, feature_extractor="RandomConvFeatures/16")
    _run(sweep, "1", 64, stand_in)
    few_real = _metrics(psnr=27.0, bpd=6.0, fid=14.0)
    few_real["generation"].update(n_generated=5000, n_real=400)
    _run(sweep, "2", 128, few_real)
    rows = _rows(write_report(sweep).read_text())
    assert "10.00 [8.50, 12.00]" in rows["32x32"] and not any("unreliable" in c for c in rows["32x32"])
    assert any(c.startswith("stand-in RandomConvFeatures/16, not FID: 12.0") for c in rows["64x64"])
    assert any(c.startswith("unreliable (n_real=400 < 2048): 14.0") for c in rows["128x128"])


def test_cli_and_clear_error_without_runs(tmp_path, capsys):
    _run(tmp_path / "s", "0", 32, _metrics(psnr=27.0, bpd=6.0, fid=None))
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "out" / "r.md")]) == 0
    assert (tmp_path / "out" / "r.md").is_file() and (tmp_path / "out" / "metrics_vs_grid.png").is_file()
    assert "](../s/0/sample/samples/grid.png)" in (tmp_path / "out" / "r.md").read_text()
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no pipeline.json below" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_report_logged_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    _run(sweep, "0", 32, _metrics(20.0, 3.0, 12.0))
    _run(sweep, "1", 64, _metrics(24.0, 2.5, None))
    from lesion_lightning.report.publish import publish_report

    _, run_dir = publish_report(sweep, to_wandb=True)
    assert run_dir.parent == sweep / "wandb" and run_dir.name.startswith("offline-run-")
    media = {p.name.split("_")[0] for p in (run_dir / "files" / "media").rglob("*.png")}
    assert media, "plot and pictures logged as images"
    tables = list((run_dir / "files" / "media" / "table").rglob("*.table.json"))
    table = json.loads(tables[0].read_text())
    assert [row[0] for row in table["data"]] == [32, 64]
    columns = table["columns"]
    first = dict(zip(columns, table["data"][0], strict=True))
    assert first["n_generated"] == 4096 and first["feature_extractor"] == "inception-v3-compat/2048"
    assert (
        first["fid_ci_low"] == 10.5
        and first["fid_reliable"] is True
        and first["memorized_code_space"] == 0.0125
    )
