"""The data throughput bench runs end to end on tiny settings and reports both sides and their ratio."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from lesion_lightning.benchmarks.data import run

REPO = Path(__file__).resolve().parents[1]


def test_data_bench_rows_and_ratios():
    cfg = OmegaConf.load(REPO / "conf" / "bench" / "data.yaml")
    cfg.merge_with(
        {"num_images": 4, "source_size": [64, 48], "image_size": 16, "batch_size": 2, "workers": [0],
         "batches": 1, "min_seconds": 0.0, "warmup_batches": 1, "sources": ["cache", "jpeg"]}
    )  # fmt: skip
    cfg.merge_with({"build_repeats": 1})
    result = run(cfg)
    builds = [r for r in result["rows"] if r["source"].startswith("cache build")]
    loaders = [r for r in result["rows"] if r not in builds]
    assert [(r["source"], r["workers"]) for r in loaders] == [("cache", 0), ("jpeg", 0)]
    assert [r["source"] for r in builds] == [
        "cache build without duplicate detection",
        "cache build with duplicate detection",
    ]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    # the same two figures, and their cost ratio, from one run
    without, with_ = (r["images_per_s"] for r in builds)
    assert abs(result["ratios"]["duplicate_detection_cost_of_build"] - (without / with_ - 1)) < 1e-9
    rate = {r["source"]: r["images_per_s"] for r in loaders}
    assert result["ratios"]["cache_over_jpeg_w0"] == rate["cache"] / rate["jpeg"]
    assert result["settings"]["augment"] is True and result["settings"]["source_size"] == [64, 48]
