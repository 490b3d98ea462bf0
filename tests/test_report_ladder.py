"""Sweep report: the FID ladder per grid (table + plot) and error bars that survive any interval."""

from __future__ import annotations

import json
from pathlib import Path

from lesion_lightning.report.publish import write_report

STAGES = ("vqvae", "encode", "pixelcnn", "sample", "evaluate")


def _rung(fid: float, ci: list[float], n: int, m: int = 400) -> dict:
    return {
        "fid": fid, "fid_ci": ci, "kid": fid / 1000, "kid_ci": [c / 1000 for c in ci],
        "precision": 0.6, "recall": 0.4, "n_compared": n, "n_real": m, "matched_n": n == m,
        "feature_extractor": "inception-v3-compat/2048",
    }  # fmt: skip


def _metrics(fid: float, fid_ci: list[float], grid: int) -> dict:
    ladder = {
        "feature_extractor": "inception-v3-compat/2048",
        "image_size": [64, 64],
        "n_reference": 400,
        "normalization": "minmax",
        "rungs": {
            "floor": _rung(5.0 + grid / 100, [4.0, 6.5], 400),
            "reconstruction": _rung(20.0 + grid / 10, [18.0, 23.0], 400),
            "samples_matched": _rung(fid + 3.0, [fid + 1.0, fid + 6.0], 400),
            "samples": _rung(fid, fid_ci, 4096),
        },
    }
    return {
        "reconstruction": {"psnr": 25.0, "psnr_ci": [24.5, 25.5], "normalization": "minmax", "psnr_8bit": 31.2},
        "prior": {"bits_per_dim": 3.0, "bits_per_dim_ci": [2.9, 3.1]},
        "generation": {
            "fid": fid, "fid_ci": fid_ci, "kid": 0.245, "kid_ci": [0.230, 0.499],
            "n_generated": 4096, "n_real": 400, "feature_extractor": "inception-v3-compat/2048",
            "normalization": "minmax",
        },
        "ladder": ladder,
        "memorization": {},
    }  # fmt: skip


def _sweep(tmp_path: Path, fids: dict[int, tuple[float, list[float]]]) -> Path:
    sweep = tmp_path / "sweep"
    for job, (grid, (fid, ci)) in enumerate(sorted(fids.items())):
        run = sweep / str(job)
        (run / "evaluate").mkdir(parents=True)
        stages = {s: {"status": "done", "seconds": 1.0} for s in STAGES}
        (run / "pipeline.json").write_text(json.dumps({"grid": grid, "stages": stages}))
        (run / "evaluate" / "metrics.json").write_text(json.dumps(_metrics(fid, ci, grid)))
    return sweep


def test_report_survives_intervals_that_exclude_their_point(tmp_path):
    # the case: a bootstrap interval lying entirely above its FID (and KID) point estimate,
    # which made matplotlib refuse the negative error bar and the sweep write no report.md at all
    sweep = _sweep(tmp_path, {32: (9.40, [11.35, 14.26]), 64: (12.0, [10.0, 11.0])})
    report = write_report(sweep)
    text = report.read_text()
    assert report.is_file() and (sweep / "metrics_vs_grid.png").is_file()
    assert "9.40 [11.35, 14.26]" in text  # the table keeps the interval as computed


def test_report_has_a_ladder_table_and_plot_per_grid(tmp_path):
    sweep = _sweep(tmp_path, {32: (40.0, [38.0, 43.0]), 128: (60.0, [57.0, 64.0])})
    text = write_report(sweep).read_text()
    ladder = text.split("## FID ladder")[1].split("\n## ")[0]
    for grid in ("32x32", "128x128"):
        assert f"### {grid}" in ladder
    assert "floor" in ladder and "rFID" in ladder and "all samples" in ladder
    assert "400 / 400" in ladder and "4096 / 400" in ladder and "inception-v3-compat/2048" in ladder
    assert "data.normalization=minmax" in ladder and "5.32 [4.00, 6.50]" in ladder
    assert "fewer than" not in ladder and "0.600" in ladder
    assert "![FID ladder per grid](fid_ladder.png)" in ladder and (sweep / "fid_ladder.png").is_file()
