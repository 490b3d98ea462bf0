"""Per-image PSNR, bootstrap intervals and the set metrics' fast bootstrap estimators, on constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lesion_lightning.metrics.distribution import (
    RELIABLE_N,
    FrechetBootstrap,
    KernelBootstrap,
    per_class,
    precision_recall,
    set_metrics,
)
from lesion_lightning.metrics.generation import _Precomputed
from lesion_lightning.metrics.stats import (
    NORMAL,
    PERCENTILE_BOOTSTRAP,
    Estimate,
    Interval,
    mean_interval,
    per_image_psnr,
    put,
)


def _constructed_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 8x8 images: one reconstructed almost perfectly (MSE 1e-4), one badly (MSE 1e-2)."""
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.01  # MSE 1e-4 -> 40 dB
    pred[1] += 0.1  # MSE 1e-2 -> 20 dB
    return pred, target


def test_psnr_is_the_mean_of_per_image_psnr_not_the_pooled_one():
    pred, target = _constructed_pair()
    per_image = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))  # what the modules and evaluate use
    per_image.update(pred[:1], target[:1])  # two batches: the mean is still over images
    per_image.update(pred[1:], target[1:])
    assert float(per_image.compute()) == pytest.approx(30.0, abs=1e-3)  # (40 + 20) / 2
    pooled = PeakSignalNoiseRatio(data_range=1.0)
    pooled.update(pred, target)
    # pooled: 10 log10(1 / mean(1e-4, 1e-2)) = 22.97 dB, 7 dB away from what papers mean
    assert float(pooled.compute()) == pytest.approx(10 * math.log10(1 / 0.00505), abs=1e-3)
    mse = (pred - target).square().mean(dim=(1, 2, 3)).double().numpy()
    assert per_image_psnr(mse) == pytest.approx([40.0, 20.0], abs=1e-3)


def test_vqvae_module_logs_per_image_psnr():
    from lesion_lightning.modules.vqvae_module import VQVAEModule

    module = VQVAEModule(
        net={"hidden_channels": 8, "res_channels": 4, "num_downsamples": 1, "codebook_size": 4, "code_dim": 4}
    )
    pred, target = _constructed_pair()
    metric = module.psnr["test"]
    metric.update(pred, target)
    assert float(metric.compute()) == pytest.approx(30.0, abs=1e-3)


def test_mean_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = mean_interval(rng.normal(10, 2, size=20), num=500)
    large = mean_interval(rng.normal(10, 2, size=2000), num=500)
    for result in (small, large):
        assert result.interval.low < result.value < result.interval.high
        assert result.interval.contains(result.value)
    width = lambda e: e.interval.high - e.interval.low  # noqa: E731
    assert width(large) < width(small) / 5
    # ~ 2 * 1.96 * sigma / sqrt(n) for a normal mean
    assert width(large) == pytest.approx(2 * 1.96 * 2 / math.sqrt(2000), rel=0.2)
    assert mean_interval([3.0, 3.0, 3.0]) == Estimate(3.0, Interval(3.0, 3.0), 3)


def test_interval_methods_cover_a_known_mean_about_95_percent_of_the_time():
    """Simulated truth: 400 samples of n=40 from N(5, 2); a 95 % interval of the mean should contain 5
    in about 95 % of them (binomial sd ~1.1 %), the bootstrap one a little less at this n."""
    rng = np.random.default_rng(1)
    draws = rng.normal(5.0, 2.0, size=(400, 40))
    normal = np.mean([Interval.normal(d).contains(5.0) for d in draws])
    boot = np.mean([mean_interval(d, num=300, seed=i).interval.contains(5.0) for i, d in enumerate(draws)])
    assert 0.92 <= normal <= 0.98, normal
    assert 0.90 <= boot <= 0.98, boot
    assert (
        Interval.normal(draws[0]).method == NORMAL
        and Interval.percentile([1.0]).method == PERCENTILE_BOOTSTRAP
    )


def test_interval_json_and_key_convention():
    replicates = np.arange(1001, dtype=float)  # percentiles 2.5 / 97.5 of 0..1000 are 25 and 975
    interval = Interval.percentile(replicates)
    assert interval.to_json() == pytest.approx([25.0, 975.0]) and interval.level == 0.95
    assert Interval.percentile([float("nan")]).finite is False
    section: dict = {}
    put(section, "fid", 12.0, interval.scaled(2.0))
    put(section, "kid", 0.1, None)
    assert section["fid_ci"] == pytest.approx([50.0, 1950.0]) and section["kid_ci"] is None
    assert (section["fid"], section["kid"]) == (12.0, 0.1)


def _features(n: int, dims: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dims, generator=g, dtype=torch.float64) + shift


@pytest.mark.parametrize("n_fake", [12, 60])  # fewer and more rows than feature dims
def test_fast_frechet_matches_torchmetrics(n_fake: int):
    real, fake = _features(40, 16, 0.0, 0), _features(n_fake, 16, 0.3, 1) * 1.5
    fid = FrechetInceptionDistance(feature=_Precomputed(16))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert FrechetBootstrap(real, fake)() == pytest.approx(float(fid.compute()), rel=1e-6)
    rows = torch.tensor([0, 0, 1, 2, 3, 5, 8, 9, 9, 11])
    again = FrechetInceptionDistance(feature=_Precomputed(16))
    again.update(real, real=True)
    again.update(fake[rows], real=False)
    assert FrechetBootstrap(real, fake)(rows) == pytest.approx(float(again.compute()), rel=1e-6)


def test_kernel_bootstrap_is_kids_unbiased_mmd():
    real, fake = _features(30, 8, 0.0, 0), _features(30, 8, 0.5, 1)
    kid = KernelInceptionDistance(feature=_Precomputed(8), subsets=1, subset_size=30)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    assert KernelBootstrap(real, fake)() == pytest.approx(float(kid.compute()[0]), rel=1e-6)
    # a count vector is the same as indexing the duplicated rows (pairs of distinct positions)
    rows = torch.tensor([0, 0, 0, 4, 7, 7, 9, 20])
    counts = torch.bincount(rows, minlength=30).double()
    dup = fake[rows]
    k = (dup @ dup.T / 8 + 1) ** 3
    gen_term = float(k.sum() - k.diagonal().sum()) / (8 * 7)
    k_rr = (real @ real.T / 8 + 1) ** 3
    real_term = float(k_rr.sum() - k_rr.diagonal().sum()) / (30 * 29)
    cross = float(((dup @ real.T / 8 + 1) ** 3).mean())
    assert KernelBootstrap(real, fake)(counts) == pytest.approx(gen_term + real_term - 2 * cross, rel=1e-9)


def test_set_metrics_intervals_flags_and_precision_recall():
    real = _features(80, 6, 0.0, 0)
    same = set_metrics(real, _features(80, 6, 0.0, 1), num_bootstrap=50, kid_subset_size=40)
    far = set_metrics(real, _features(80, 6, 3.0, 2), num_bootstrap=50, kid_subset_size=40)
    for out in (same, far):
        assert out["fid_ci"][0] <= out["fid"] * 1.5 and out["fid_ci"][0] < out["fid_ci"][1]
        assert out["n_generated"] == 80 and out["n_real"] == 80 and out["reliable"] is False
        assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1
    assert far["fid_ci"][0] > same["fid_ci"][1]  # the intervals tell the two apart
    assert far["kid_ci"][0] > same["kid_ci"][1]
    assert same["precision"] > 0.5 and far["precision"] < 0.1 and far["recall"] < 0.1
    assert RELIABLE_N == 2048


def test_precision_recall_separates_fidelity_from_diversity():
    real = _features(200, 4, 0.0, 0)
    collapsed = real[:5].repeat(40, 1) + 1e-3 * _features(200, 4, 0.0, 3)  # faithful but not diverse
    out = precision_recall(real, collapsed, k=3)
    assert out["precision"] > 0.9 and out["recall"] < 0.3


def test_per_class_splits_by_label_and_skips_tiny_classes():
    real = torch.cat([_features(30, 4, 0.0, 0), _features(30, 4, 4.0, 1)])
    real_labels = np.array([0] * 30 + [1] * 30)
    fake = torch.cat([_features(20, 4, 0.0, 2), _features(1, 4, 4.0, 3)])
    fake_labels = np.array([0] * 20 + [1])
    out = per_class(
        real, real_labels, fake, fake_labels, ["nevus", "melanoma"], num_bootstrap=10, kid_subset_size=10
    )
    assert out["nevus"]["n_generated"] == 20 and out["nevus"]["n_real"] == 30
    assert "skipped" in out["melanoma"]
