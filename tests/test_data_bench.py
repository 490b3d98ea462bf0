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
    result = run(cfg)
    assert [(r["source"], r["workers"]) for r in result["rows"]] == [("cache", 0), ("jpeg", 0)]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    rate = {r["source"]: r["images_per_s"] for r in result["rows"]}
    assert result["ratios"]["cache_over_jpeg_w0"] == rate["cache"] / rate["jpeg"]
    assert result["settings"]["augment"] is True and result["settings"]["source_size"] == [64, 48]
