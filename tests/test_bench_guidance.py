"""`python -m lesion_lightning.bench guidance`: class fidelity and FID / precision / recall per guidance weight."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_config, run_cli

from lesion_lightning.benchmarks.guidance import guidance_weights, run, sample_config


def test_guidance_bench_shares_evaluates_eval_group(tmp_path: Path) -> None:
    """conf/eval/ is the one home of the metric settings: the bench changes only what it says it does."""
    bench = compose_config("bench", ["bench=guidance"], tmp_path).bench.eval
    evaluate = compose_config("evaluate", ["vqvae_ckpt=x"], tmp_path).eval
    assert set(bench) == set(evaluate)
    differ = {k for k in evaluate if bench[k] != evaluate[k]}
    assert differ == {"feature_extractor", "per_class"}, differ
    # an evaluate setting changed in conf/eval/default.yaml reaches both, by composition
    assert (
        bench.fid_splits == evaluate.fid_splits
        and bench.kid_bootstrap == evaluate.kid_bootstrap
        and bench.prc_k == evaluate.prc_k
    )


def test_guidance_bench_config_composes(tmp_path: Path) -> None:
    cfg = compose_config("bench", ["bench=guidance"], tmp_path)
    assert list(cfg.bench.guidance_weights) == [0, 1, 3] and cfg.bench.run_dir is None
    # w is chosen by these numbers: they are measured on val, never on the test split reported later
    assert cfg.bench.split == "val"
    assert cfg.bench.out_dir == str(tmp_path)
    assert guidance_weights(cfg.bench.guidance_weights) == [0.0, 1.0, 3.0]
    for bad in ([], [-1.0], [1, float("nan")], "3", [True]):
        with pytest.raises(SystemExit, match="guidance_weights must be"):
            guidance_weights(bad)
    # every weight samples with the same seed and label mix, only the weight differs
    a, b = (
        sample_config(cfg.bench, Path("p.ckpt"), Path("v.ckpt"), w, tmp_path / str(w)) for w in (0.0, 3.0)
    )
    assert (a.guidance, b.guidance) == (0.0, 3.0) and a.seed == b.seed and a.label_distribution == "train"
    assert a.label is None and a.sampler == "cached" and a.num_samples == 256
    cfg.bench.run_dir = str(tmp_path / "not_a_run")
    with pytest.raises(
        SystemExit, match="no prior checkpoint.*finished `python -m lesion_lightning.pipeline`"
    ):
        run(cfg.bench)


@pytest.mark.slow
def test_bench_guidance_writes_one_row_per_weight(chain, tmp_path: Path) -> None:
    proc = run_cli(
        "lesion_lightning.bench",
        "guidance",
        f"bench.run_dir={chain['root']}",
        "bench.guidance_weights=[0,2]",
        "bench.num_samples=6",
        "bench.classifier.steps=2",
        "bench.classifier.batch_size=4",
        "bench.fidelity_resamples=20",
        "bench.eval.fid_splits=2",
        "bench.eval.kid_bootstrap=5",
        "bench.eval.prc_k=1",  # the chain's val split has a handful of images
        "bench.device=cpu",
        "hydra.run.dir=b",
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert report["benchmark"] == "guidance" and report["machine"]["cpu_count"] >= 1
    rows, reference = report["rows"][:-1], report["rows"][-1]
    assert [r["guidance"] for r in rows] == [0.0, 2.0] and reference["guidance"] == "real val images"
    classes = report["class_names"]
    for row in rows:
        assert row["s_per_image"] > 0 and row["n_generated"] == 6 and row["n_real"] >= 2
        assert row["extractor"] == "RandomConvFeatures/16" and row["reliable"] is False
        assert np.isfinite(row["fid"])
        # half-split intervals need >= 4 images per side; below that none is claimed
        assert (
            len(row["fid_ci"]) == 2 if min(row["n_real"], row["n_generated"]) >= 4 else row["fid_ci"] is None
        )
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert sum(row[f"n_{c}"] for c in classes) == 6
        for c in classes:
            if row[f"n_{c}"]:
                assert 0 <= row[f"fidelity_{c}"] <= 1 and len(row[f"fidelity_{c}_ci"]) == 2
    # no utility stage in the chain: the classifier was trained here, on the real train split
    assert report["classifier"]["source"].startswith("trained here")
    assert Path(report["classifier"]["checkpoints"][0]).is_file()
    # the same seed draws the same labels for every weight; the weight changes the draws
    w0, w2 = (report["per_weight"][k] for k in ("0", "2"))
    assert w0["label_counts"] == w2["label_counts"]
    grids = [np.load(Path(w["samples_dir"]) / "indices.npy") for w in (w0, w2)]
    assert not np.array_equal(*grids)
    assert "s/image w=2 / w=0" in report["ratios"]
    assert "unreliable FID" in proc.stdout and "stand-in" in proc.stdout
