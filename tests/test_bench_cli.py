"""`python -m lesion_lightning.bench <what>` prints a table and writes bench.json with the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelpers import run_cli

from lesion_lightning.bench import _positional_to_override, format_table


def test_positional_benchmark_name_becomes_override() -> None:
    assert _positional_to_override(["bench", "sampler", "bench.batch_size=2"]) == [
        "bench",
        "bench=sampler",
        "bench.batch_size=2",
    ]
    assert _positional_to_override(["bench", "bench=data"]) == ["bench", "bench=data"]
    table = format_table([{"a": 1, "b": 2.5}, {"a": 10, "b": 0.125}])
    assert table.splitlines()[0].split() == ["a", "b"] and len(table.splitlines()) == 4


@pytest.mark.slow
def test_bench_train_writes_json(tmp_path: Path) -> None:
    proc = run_cli(
        "lesion_lightning.bench",
        "train",
        "bench.experiments=[quickstart,quickstart_pixelcnn]",
        "bench.image_size=32",
        "bench.batch_size=2",
        "bench.pixelcnn_defaults.grid_size=[16,16]",
        "bench.steps=1",
        "bench.warmup=0",
        "hydra.run.dir=b",
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert report["benchmark"] == "train" and report["machine"]["cpu_count"] >= 1
    rows = {r["experiment"]: r for r in report["rows"]}
    assert set(rows) == {"quickstart", "quickstart_pixelcnn"}
    assert all(r["images_per_s"] > 0 for r in rows.values())
    assert rows["quickstart_pixelcnn"]["input"] == "16x16"  # the prior trains on code grids
    assert "images_per_s" in proc.stdout
