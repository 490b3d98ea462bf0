"""evaluate: reconstruction, prior and generation sections on a tiny real VQ-VAE -> PixelCNN -> samples chain."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelpers import CHAIN_NUM_SAMPLES, compose_config, run_cli
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from lesion_lightning.data.indices import MANIFEST
from lesion_lightning.evaluate import evaluate
from lesion_lightning.metrics import generation
from lesion_lightning.metrics.generation import GenerationUnavailable, RandomConvFeatures, build_inception
from lesion_lightning.metrics.naming import metric_key
from lesion_lightning.metrics.prior import marginal_bits_per_dim
from lesion_lightning.modules.checkpoints import build_datamodule, fingerprint, load_vqvae

STAND_IN = (
    "eval.feature_extractor={_target_:lesion_lightning.metrics.generation.RandomConvFeatures,num_features:8}"
)
NUM_SAMPLES = CHAIN_NUM_SAMPLES


def run_evaluate(out_dir: Path, *overrides: str) -> dict:
    cfg = compose_config("evaluate", ["device=cpu", f"out_dir={out_dir}", *overrides], out_dir)
    return evaluate(cfg)


@pytest.mark.slow
def test_reconstruction_metrics_match_a_direct_computation(chain, tmp_path):
    results = run_evaluate(tmp_path, f"vqvae_ckpt={chain['vqvae']}")
    recon = results["reconstruction"]
    assert all(math.isfinite(recon[k]) for k in ("mse", "psnr", "ssim", "codebook_usage", "perplexity"))
    assert 0 < recon["codebook_usage"] <= 1 and 1 <= recon["perplexity"] <= recon["codebook_size"]

    # the same images and model, by hand: mean over images of each clamped reconstruction's PSNR
    vqvae = load_vqvae(chain["vqvae"])
    test = build_datamodule(chain["vqvae"]).split_dataset("test")
    x = torch.stack([test[i]["image"] for i in range(len(test))])
    with torch.no_grad():
        mse_i = (vqvae.net(x).recon.clamp(0, 1) - x).square().mean(dim=(1, 2, 3)).double()
    assert recon["num_images"] == len(test)
    assert recon["mse"] == pytest.approx(float(mse_i.mean()), rel=1e-5)
    assert recon["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse_i)).mean()), abs=1e-3)
    for key in ("mse", "psnr", "ssim"):  # 95 % bootstrap intervals over the test images
        low, high = recon[f"{key}_ci"]
        assert low <= recon[key] <= high and low < high
        assert results["metrics"][f"test/{key}_ci_low"] == low

    # nothing else was asked for: those sections say so instead of inventing numbers
    assert "skipped" in results["prior"] and "pixelcnn_ckpt" in results["prior"]["skipped"]
    assert "skipped" in results["generation"] and "samples_dir" in results["generation"]["skipped"]
    assert "skipped" in results["memorization"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["reconstruction"] == json.loads(json.dumps(recon))
    # originals above reconstructions: 2 rows of min(8, N) 32 px images with 2 px padding
    n = min(8, len(test))
    assert Image.open(tmp_path / "reconstructions.png").size == (n * 34 + 2, 2 * 34 + 2)


@pytest.mark.slow
def test_prior_bits_per_dim_and_marginal_baseline(chain, tmp_path):
    results = run_evaluate(tmp_path, f"vqvae_ckpt={chain['vqvae']}", f"pixelcnn_ckpt={chain['pixelcnn']}")
    prior = results["prior"]
    assert Path(prior["index_dir"]) == chain["indices"]  # found through the PixelCNN checkpoint
    assert prior["uniform_bits_per_dim"] == pytest.approx(math.log2(16))
    assert 0 < prior["marginal_bits_per_dim"] < prior["uniform_bits_per_dim"]
    # the same number Lightning logged as test/bits_per_dim right after training (same weights, same split)
    rows = list(csv.DictReader((chain["pixelcnn_run"] / "csv" / "version_0" / "metrics.csv").open()))
    logged = [float(r["test/bits_per_dim"]) for r in rows if r.get("test/bits_per_dim")]
    assert prior["bits_per_dim"] == pytest.approx(logged[-1], rel=1e-5)
    assert results["metrics"]["test/bits_per_dim"] == prior["bits_per_dim"]
    # bits per image: comparable across grid sizes (8x8 grids here)
    assert prior["bits_per_image"] == pytest.approx(prior["bits_per_dim"] * 64)
    assert prior["marginal_bits_per_image"] == pytest.approx(prior["marginal_bits_per_dim"] * 64)
    for key in ("bits_per_dim", "bits_per_image", "marginal_bits_per_dim"):
        low, high = prior[f"{key}_ci"]
        assert low < prior[key] < high
    # the baseline's add-alpha is the best of the grid on the val codes, not fixed at 1
    smoothing = prior["marginal_smoothing"]
    assert smoothing["chosen_on"].startswith("val codes")
    val_bits = {float(a): b for a, b in smoothing["val_bits_per_dim"].items()}
    assert set(val_bits) == {0.001, 0.01, 0.03, 0.1, 0.3, 1.0}
    assert val_bits[smoothing["alpha"]] == min(val_bits.values())


def test_marginal_baseline_by_hand():
    train = np.array([[[0, 1]], [[0, 0]]])  # (N=2, H=1, W=2), K=2
    test = np.array([[[0, 1]]])
    # add-one: position 0 saw code 0 twice -> p = 3/4; position 1 saw each code once -> p = 2/4
    expected = (-math.log2(3 / 4) - math.log2(2 / 4)) / 2
    assert marginal_bits_per_dim(train, test, num_codes=2) == pytest.approx(expected)
    with pytest.raises(ValueError, match="outside"):
        marginal_bits_per_dim(train, test, num_codes=1)


@pytest.mark.slow
def test_constant_index_dataset_costs_almost_nothing_under_the_baseline(chain, tmp_path):
    """An index dataset (fingerprinted to the chain's VQ-VAE) whose grids are all code 3: ~0 bits/dim."""
    fake = tmp_path / "indices"
    fake.mkdir()
    n_train, n_test, k = 500, 7, 16
    for split, n in (("train", n_train), ("test", n_test)):
        np.save(fake / f"{split}_indices.npy", np.full((n, 4, 4), 3, dtype=np.uint16))
        np.save(fake / f"{split}_labels.npy", np.zeros(n, dtype=np.int64))
    manifest = {
        "format": 1,
        "grid_size": [4, 4],
        "num_codes": k,
        "splits": {"train": n_train, "test": n_test},
        "class_names": ["nevus"],
        "vqvae": {"checkpoint": str(chain["vqvae"]), "fingerprint": fingerprint(chain["vqvae"])},
    }
    (fake / MANIFEST).write_text(json.dumps(manifest))
    prior = run_evaluate(tmp_path / "out", f"vqvae_ckpt={chain['vqvae']}", f"index_dir={fake}")["prior"]
    assert prior["marginal_bits_per_dim"] == pytest.approx(-math.log2((n_train + 1) / (n_train + k)))
    assert prior["marginal_bits_per_dim"] < 0.05
    assert "bits_per_dim" not in prior and "pixelcnn_ckpt" in prior["notes"][0]


@pytest.mark.slow
def test_generation_skipped_without_inception_weights(chain, tmp_path, monkeypatch):
    """The real entry point, offline and with an empty torch hub cache: a message, never a number."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "run"
    proc = run_cli(
        "lesion_lightning.evaluate",
        f"vqvae_ckpt={chain['vqvae']}",
        f"samples_dir={chain['samples']}",
        f"index_dir={chain['indices']}",
        "eval.allow_download=false",
        "logger=csv",
        "device=cpu",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    generation = json.loads((out / "metrics.json").read_text())["generation"]
    assert set(generation) == {"skipped"}
    assert "eval.inception_weights=" in generation["skipped"] and "weights-inception" in generation["skipped"]
    assert "test/fid" not in json.loads((out / "metrics.json").read_text())["metrics"]
    # memorization in code space needs no pretrained network: it is there offline
    memorization = json.loads((out / "metrics.json").read_text())["memorization"]
    code = memorization["code_space"]
    assert 0 <= code["memorized_fraction"] <= 1 and code["n_generated"] == NUM_SAMPLES
    assert (out / "memorization.png").is_file() and "skipped" in memorization["feature_space"]
    assert "skipped" in proc.stdout and "test/psnr" in proc.stdout
    metrics_csv = next(out.glob("csv/*/metrics.csv"))  # the csv logger got the computed metrics only
    header = metrics_csv.read_text().splitlines()[0]
    assert "test/psnr" in header and "test/fid" not in header


def test_inception_weights_unavailable_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(
        FileNotFoundError, match="eval.inception_weights"
    ):  # asked for a file that is not there
        build_inception(weights_path=tmp_path / "nope.pth")
    with pytest.raises(GenerationUnavailable, match="eval.inception_weights="):
        build_inception(allow_download=False)
    pytest.importorskip("torch_fidelity")
    monkeypatch.setattr(generation, "_reachable", lambda *a: False)  # offline, whatever this machine is
    with pytest.raises(GenerationUnavailable, match="unreachable"):
        build_inception(allow_download=True)


def test_network_probe_is_bounded():
    start = time.perf_counter()
    generation._reachable("10.255.255.1", 9, timeout=0.5)  # non-routable: fails or times out, never hangs
    assert time.perf_counter() - start < 2.0


@pytest.mark.slow
def test_generation_computed_with_a_stand_in_extractor(chain, tmp_path):
    results = run_evaluate(
        tmp_path,
        f"vqvae_ckpt={chain['vqvae']}",
        f"samples_dir={chain['samples']}",
        f"pixelcnn_ckpt={chain['pixelcnn']}",
        STAND_IN,
        "logger=wandb",
        "eval.fid_splits=3",
        "eval.kid_bootstrap=20",
        "eval.prc_repeats=2",
        "eval.prc_k=1",  # the tiny test split has 3 images: k must stay below that
    )
    gen = results["generation"]
    assert "skipped" not in gen
    assert math.isfinite(gen["fid"]) and gen["fid"] >= 0
    assert math.isfinite(gen["kid_mean"]) and math.isfinite(gen["kid_std"])
    assert gen["num_generated"] == NUM_SAMPLES and gen["num_features"] == 8
    # n, extractor and an interval beside every number; under 2,048 samples it is flagged
    assert gen["n_generated"] == NUM_SAMPLES and gen["n_real"] == gen["num_real"] > 0
    assert gen["feature_extractor"].endswith("RandomConvFeatures") and gen["reliable"] is False
    assert gen["kid_ci"][0] <= gen["kid"] <= gen["kid_ci"][1]
    if gen["n_real"] >= 4:  # half-split intervals need two rows per half
        assert gen["fid_ci"][0] <= gen["fid"] <= gen["fid_ci"][1]
    else:
        assert gen["fid_ci"] is None and "half-split" in gen["fid_ci_skipped"]
    assert gen["feature_preprocessing"] is None  # a stand-in: no Inception recipe claimed
    # every class with < 50 real images is skipped, listed, and keeps its n
    assert gen["per_class_skipped"] == [n for n, s in gen["per_class"].items() if s["n_real"] < 50]
    assert 0 <= gen["precision"] <= 1 and 0 <= gen["recall"] <= 1 and gen["prc_k"] == 1
    assert results["metrics"]["test/n_generated"] == NUM_SAMPLES
    # stand-in numbers never pass as FID: the flat names (CSV, TensorBoard, W&B) carry the extractor
    assert (
        results["metrics"]["test/fid_RandomConvFeatures8"] == gen["fid"]
        and "test/fid" not in results["metrics"]
    )
    assert results["metrics"]["test/kid_RandomConvFeatures8_ci_low"] == gen["kid_ci"][0]
    # class-conditional samples: FID per class, against that class's real images
    assert set(gen["per_class"]) == set(build_datamodule(chain["vqvae"]).class_names)
    for name, stats in gen["per_class"].items():
        if "fid" in stats:
            assert results["metrics"][f"test/fid_RandomConvFeatures8/{name}"] == stats["fid"]
    # the FID ladder: every rung against the same real reference, on the same extractor
    ladder = results["ladder"]
    assert (
        ladder["n_reference"] == gen["n_real"] and ladder["normalization"] == gen["normalization"] == "minmax"
    )
    rungs = ladder["rungs"]
    assert set(rungs) == {"floor", "reconstruction", "samples_matched", "samples"}
    assert rungs["samples"]["fid"] == pytest.approx(gen["fid"])
    for name in ("floor", "reconstruction"):
        assert rungs[name]["n_compared"] == rungs[name]["n_real"] == gen["n_real"]
        assert (
            math.isfinite(rungs[name]["fid"]) and rungs[name]["feature_extractor"] == gen["feature_extractor"]
        )
        assert (
            results["metrics"][f"test/ladder/{name}/{metric_key('fid', rungs[name])}"] == rungs[name]["fid"]
        )
    assert results["reconstruction"]["normalization"] == "minmax" and "psnr_8bit" in results["reconstruction"]
    memorization = results["memorization"]
    for space in ("code_space", "feature_space"):
        assert 0 <= memorization[space]["memorized_fraction"] <= 1
        assert (tmp_path / memorization[space]["picture"]).is_file()

    # torchmetrics' own FID with the same extractor on the same uint8 images gives the same number
    test = build_datamodule(chain["vqvae"]).split_dataset("test")
    real = torch.stack([test[i]["image"] for i in range(gen["num_real"])])
    fake = torch.stack(
        [
            torch.from_numpy(np.array(Image.open(chain["samples"] / f"sample_{i:04d}.png"))).permute(2, 0, 1)
            for i in range(NUM_SAMPLES)
        ]
    )
    fid = FrechetInceptionDistance(feature=RandomConvFeatures(8))
    fid.update((real * 255).round().to(torch.uint8), real=True)
    fid.update(fake, real=False)
    assert gen["fid"] == pytest.approx(float(fid.compute()), rel=1e-4, abs=1e-8)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "logger=wandb should leave an offline run"


def _other_vqvae(chain, tmp_path) -> Path:
    """A valid VQ-VAE checkpoint with another fingerprint (as if trained again)."""
    ckpt = torch.load(chain["vqvae"], map_location="cpu", weights_only=True)
    ckpt["retrained"] = True
    path = tmp_path / "other.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ("pixelcnn", "mismatched checkpoints"),
        ("index_dir", "mismatched index dataset"),
        ("samples", "mismatched samples"),
    ],
)
def test_mismatched_inputs_are_refused(chain, tmp_path, inputs, message):
    key = {"pixelcnn": "pixelcnn_ckpt", "index_dir": "index_dir", "samples": "samples_dir"}[inputs]
    value = chain["indices"] if inputs == "index_dir" else chain[inputs]
    with pytest.raises(ValueError, match=message):
        run_evaluate(tmp_path, f"vqvae_ckpt={_other_vqvae(chain, tmp_path)}", f"{key}={value}")
