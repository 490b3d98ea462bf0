"""The FID ladder (metrics.ladder), metrics on the original 8-bit scale (metrics.scale) and the marginal
baseline's smoothing chosen on val (metrics.prior.choose_smoothing): each against a constructed truth."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lesion_lightning.data.datamodule import SplitDataset
from lesion_lightning.data.transforms import ImageTransform
from lesion_lightning.evaluate import reconstruction_metrics
from lesion_lightning.metrics.generation import RandomConvFeatures, extract_features
from lesion_lightning.metrics.ladder import fid_ladder, flat_ladder, format_ladder, seeded_rows
from lesion_lightning.metrics.prior import choose_smoothing, marginal_bits_per_dim
from lesion_lightning.metrics.scale import psnr_8bit, unstretch


def _dataset(tmp_path: Path, images: np.ndarray, name: str, normalization: str = "minmax") -> SplitDataset:
    path = tmp_path / f"{name}.npy"
    np.save(path, images)
    n = len(images)
    return SplitDataset(
        path, np.arange(n), np.zeros(n), [f"{name}{i}" for i in range(n)], ImageTransform(None, normalization)
    )


class _ShiftedVQVAE(torch.nn.Module):
    """Stands in for a VQ-VAE whose reconstruction is off by a known amount everywhere (on the [0, 1]
    scale): + offset below 0.5, - offset above, so clamping to [0, 1] never hides the error."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.net = self
        self.codebook_size = 4

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        indices = torch.zeros(x.shape[0], 2, 2, dtype=torch.long)
        return SimpleNamespace(recon=torch.where(x < 0.5, x + self.offset, x - self.offset), indices=indices)


def _low_contrast_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 images whose values span exactly [50, 150] (so min-max stretches them by 255 / 100)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(51, 150, size=(n, size, size, 3)).astype(np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = 50, 150
    return images


def test_psnr_on_the_original_scale_undoes_each_images_stretch():
    raw = torch.from_numpy(_low_contrast_images(3)).permute(0, 3, 1, 2)  # (3, 3, 16, 16) uint8
    stretched = (raw.double() - 50) / 100  # what data.normalization=minmax feeds the VQ-VAE
    assert torch.equal(unstretch(stretched, raw), raw.double())
    # an error of 0.01 on the stretched scale is 0.01 * (150 - 50) = 1 grey level on the stored image:
    # PSNR 20 log10(255 / 1) = 48.13 dB, while the stretched scale says 10 log10(1 / 0.01^2) = 40 dB
    psnr = psnr_8bit(stretched + 0.01, raw)
    assert psnr == pytest.approx(np.full(3, 20 * math.log10(255.0)), abs=1e-9)


def test_reconstruction_section_names_its_scale_and_reports_8bit_psnr(tmp_path):
    images = _low_contrast_images(5)
    recon, _ = reconstruction_metrics(
        _ShiftedVQVAE(0.01), _dataset(tmp_path, images, "test"), 2, torch.device("cpu"),
        num_bootstrap=50, normalization="minmax",
    )  # fmt: skip
    assert recon["normalization"] == "minmax" and "min-max" in recon["scale"]
    assert recon["psnr"] == pytest.approx(40.0, abs=1e-3)  # on the stretched [0, 1] scale
    assert recon["psnr_8bit"] == pytest.approx(20 * math.log10(255.0), abs=1e-6)
    assert recon["psnr_8bit_ci"][0] <= recon["psnr_8bit"] <= recon["psnr_8bit_ci"][1]
    # with plain /255 scaling the [0, 1] PSNR already is the 8-bit one: no second number
    plain, _ = reconstruction_metrics(
        _ShiftedVQVAE(0.01), _dataset(tmp_path, images, "plain", "scale"), 2, torch.device("cpu"),
        num_bootstrap=50, normalization="scale",
    )  # fmt: skip
    assert plain["normalization"] == "scale" and "psnr_8bit" not in plain


def _ladder(tmp_path: Path, real: np.ndarray, train: np.ndarray, offset: float, fake=None) -> dict:
    extractor = RandomConvFeatures(8)
    real_ds, train_ds = _dataset(tmp_path, real, "real"), _dataset(tmp_path, train, "train")
    rows = np.arange(len(real_ds))
    batches = (torch.stack([real_ds[i]["image"] for i in range(len(real_ds))]),)
    reference = extract_features(extractor, batches, torch.device("cpu"))
    options = {"kid_subset_size": 8, "kid_subsets": 10, "num_bootstrap": 20, "prc_k": 2, "seed": 0}
    return fid_ladder(
        extractor, "RandomConvFeatures", reference, rows, real_ds, train_ds, _ShiftedVQVAE(offset), fake,
        (16, 16), options, batch_size=4, num_workers=0, seed=0, device=torch.device("cpu"),
    )  # fmt: skip


def test_ladder_rungs_are_zero_for_copies_of_the_reference(tmp_path):
    real = _low_contrast_images(12, seed=1)
    # oracle: the "train subset" is the reference itself and the VQ-VAE reconstructs perfectly,
    # so floor and rFID are 0 (up to float error) and precision = recall = 1
    ladder = _ladder(tmp_path, real, real, offset=0.0)
    for name in ("floor", "reconstruction"):
        rung = ladder["rungs"][name]
        assert rung["fid"] == pytest.approx(0.0, abs=1e-6), name
        assert rung["n_compared"] == rung["n_real"] == 12 and rung["matched_n"]
        assert rung["precision"] == rung["recall"] == 1.0
        assert rung["feature_extractor"] == "RandomConvFeatures"
    assert "samples" not in ladder["rungs"]  # no samples given: only the two real rungs


def test_ladder_orders_a_worse_reconstruction_and_matches_n(tmp_path):
    real, train = _low_contrast_images(12, seed=1), _low_contrast_images(30, seed=2)
    fake = torch.randn(40, 8).double() + 3.0  # generated features far from the reference
    ladder = _ladder(tmp_path, real, train, offset=0.3, fake=fake)
    rungs = ladder["rungs"]
    assert set(rungs) == {"floor", "reconstruction", "samples_matched", "samples"}
    # every compared set has the reference's n except "all samples"; all share the same 12 real images
    assert [rungs[k]["n_compared"] for k in ("floor", "reconstruction", "samples_matched")] == [12, 12, 12]
    assert rungs["samples"]["n_compared"] == 40 and all(r["n_real"] == 12 for r in rungs.values())
    # a seeded, duplicate-free train subset of the reference's size
    assert len(set(seeded_rows(30, 12, 0).tolist())) == 12
    # a VQ-VAE that moves every value by 0.3 is farther from real than another real set;
    # samples 3 units away in every feature are farther still
    assert rungs["floor"]["fid"] < rungs["reconstruction"]["fid"] < rungs["samples_matched"]["fid"]
    flat = flat_ladder(ladder, "test")
    # a stand-in extractor's numbers carry its name in the logged keys, never a bare `fid`
    assert flat["test/ladder/reconstruction/fid_RandomConvFeatures8"] == rungs["reconstruction"]["fid"]
    assert "test/ladder/reconstruction/fid" not in flat
    assert flat["test/ladder/samples/n_compared"] == 40
    assert "test/ladder/floor/fid_RandomConvFeatures8_ci_low" in flat
    table = format_ladder(ladder, "test", "minmax")
    assert "12 real test images" in table and "RandomConvFeatures" in table and "minmax" in table
    assert len(table.splitlines()) == 2 + 4 and "FID_RandomConvFeatures8" in table


def test_marginal_smoothing_is_chosen_on_val():
    rng = np.random.default_rng(0)
    k = 64
    # val codes all seen at their positions in train: the least smoothing predicts them best
    train = rng.integers(0, 4, size=(50, 3, 3))
    alphas = [0.01, 0.1, 1.0]
    best, scores = choose_smoothing(train, train[:20], k, alphas)
    assert best == 0.01 and scores[0.01] < scores[1.0]
    # val codes mostly unseen in train: mass on unseen codes pays, the largest alpha wins
    unseen = rng.integers(4, k, size=(20, 3, 3))
    best, scores = choose_smoothing(train, unseen, k, alphas)
    assert best == 1.0 and scores == {a: marginal_bits_per_dim(train, unseen, k, a) for a in alphas}
    with pytest.raises(ValueError, match="marginal_smoothing_grid is empty"):
        choose_smoothing(train, unseen, k, [])
