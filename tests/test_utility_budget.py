"""The utility stage's data-budget machinery against known truths: nested stratified subsets, balanced
sampling frequencies, the hierarchical bootstrap's coverage on a simulation with a known mean, and
equivalent real images on curves whose inverse is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from lesion_lightning.data.budget import balanced_sampler, balanced_weights, nested_subsets
from lesion_lightning.metrics.budget import (
    BELOW,
    BEYOND,
    ON,
    covers,
    equivalent_real,
    hierarchical_bootstrap,
    invert_curve,
    monotone,
)
from lesion_lightning.metrics.stats import Interval
from lesion_lightning.metrics.utility import Task
from lesion_lightning.report.curve import worth_cell

TASK = Task(("nevus", "melanoma"))


def test_subsets_are_stratified_nested_seeded_and_keep_every_class() -> None:
    labels = np.array([0] * 90 + [1] * 10 + [2] * 3)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    subsets = nested_subsets(labels, [0.5, 0.1, 1.0, 0.25], seed=3)
    assert list(subsets) == [0.1, 0.25, 0.5, 1.0]
    for f, idx in subsets.items():
        counts = np.bincount(labels[idx], minlength=3)
        assert counts.tolist() == [max(1, round(f * n)) for n in (90, 10, 3)], f
        assert len(set(idx.tolist())) == len(idx)
    fractions = list(subsets)
    for small, large in zip(fractions, fractions[1:], strict=False):
        assert set(subsets[small].tolist()) < set(subsets[large].tolist())
    assert sorted(subsets[1.0].tolist()) == list(range(len(labels)))
    again = nested_subsets(labels, [0.1, 0.25, 0.5, 1.0], seed=3)
    assert all(np.array_equal(again[f], subsets[f]) for f in subsets)
    other = nested_subsets(labels, [0.25], seed=4)
    assert not np.array_equal(other[0.25], subsets[0.25])
    for bad in ([], [0.0, 0.5], [1.5], ["half"]):
        with pytest.raises(ValueError, match="real_fractions"):
            nested_subsets(labels, bad)


def test_balanced_sampler_draws_each_class_equally_often() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    weights = balanced_weights(labels)
    assert float(weights[labels == 0].sum()) == pytest.approx(float(weights[labels == 1].sum()))
    sampler = balanced_sampler(labels, seed=0)
    draws = np.concatenate([np.fromiter(iter(sampler), dtype=np.int64) for _ in range(100)])
    assert len(draws) == 100 * len(labels)  # one epoch = as many draws as images: same steps as shuffling
    share = float(np.mean(labels[draws] == 1))
    # 10000 draws of p = 0.5: sd 0.005; plain shuffling would give 0.10
    assert abs(share - 0.5) < 0.025, share
    assert np.array_equal(
        np.fromiter(iter(balanced_sampler(labels, 5)), int),
        np.fromiter(iter(balanced_sampler(labels, 5)), int),
    )


def _binormal_run(
    rng: np.random.Generator, k: np.ndarray, n_per_class: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A fresh test set and one classifier per seed: score = k_s * y + u_i + v_si, u (image difficulty,
    shared by every seed) and v (per seed) N(0, 1/2) each, so seed s's population AUC is Phi(k_s / sqrt 2)."""
    y = np.repeat([0, 1], n_per_class)
    u = rng.normal(0, math.sqrt(0.5), len(y))
    probs = []
    for ks in k:
        s = ks * y + u + rng.normal(0, math.sqrt(0.5), len(y))
        p1 = torch.from_numpy(1 / (1 + np.exp(-s)))
        probs.append(torch.stack([1 - p1, p1], 1))
    return probs, torch.from_numpy(y)


def test_hierarchical_interval_covers_the_mean_over_seeds_and_images() -> None:
    """The estimand: the expected AUC of a classifier from a random seed on a random test set. k_s ~
    N(1.5, 0.7^2) gives a seed sd of ~0.1 AUC, larger than 50 + 50 test images' ~0.04, so an interval
    over test images alone misses it often; the hierarchical one (5 seeds) must cover it near the nominal
    rate (a bootstrap of 5 seeds understates their spread by sqrt(4/5): a bit below 95 %)."""
    grid = np.linspace(-6, 6, 4001)
    truth = float(np.sum(norm.pdf(grid) * norm.cdf((1.5 + 0.7 * grid) / math.sqrt(2))) * (grid[1] - grid[0]))
    rng = np.random.default_rng(0)
    hits = {True: 0, False: 0}
    sims = 80
    for sim in range(sims):
        probs, labels = _binormal_run(rng, rng.normal(1.5, 0.7, 5), 50)
        for resample_seeds in (True, False):
            reps = hierarchical_bootstrap(
                {"arm": probs}, labels, TASK, 100, seed=sim, resample_seeds=resample_seeds
            )
            hits[resample_seeds] += covers(reps.interval("arm", "macro_auroc"), truth)
    coverage, images_only = hits[True] / sims, hits[False] / sims
    # measured: 0.91 and 0.65 (sd of a coverage over 80 simulations: ~0.03-0.05)
    assert coverage >= 0.8, (coverage, images_only)
    assert images_only <= coverage - 0.15, (coverage, images_only)


def test_hierarchical_bootstrap_is_paired_across_curve_points() -> None:
    rng = np.random.default_rng(1)
    probs, labels = _binormal_run(rng, np.array([1.0, 1.5, 2.0]), 40)
    weaker = [torch.stack([1 - p[:, 1] ** 2, p[:, 1] ** 2], 1) for p in probs]  # same ranks: same AUC
    reps = hierarchical_bootstrap({"a": probs, "b": probs, "c": weaker}, labels, TASK, 300)
    mean, ci = reps.difference("b", "a", "macro_auroc")
    assert mean == 0.0 and ci == [0.0, 0.0]  # same seed draw and image draw for every point
    mean, ci = reps.difference("c", "a", "macro_auroc")
    assert mean == pytest.approx(0.0, abs=1e-12) and ci == pytest.approx([0.0, 0.0], abs=1e-12)
    assert reps.num_seeds == 3 and reps.sd("a", "macro_auroc") > 0
    lo, hi = reps.interval("a", "macro_auroc")
    assert lo <= reps.point["a"]["macro_auroc"] <= hi
    with pytest.raises(ValueError, match="same number"):
        hierarchical_bootstrap({"a": probs, "b": probs[:2]}, labels, TASK, 10)


def test_monotone_is_pool_adjacent_violators() -> None:
    assert monotone([1, 3, 2, 4]).tolist() == [1, 2.5, 2.5, 4]
    assert monotone([0.9, 0.8, 0.7]).tolist() == pytest.approx([0.8, 0.8, 0.8])
    assert monotone([0.1, 0.2]).tolist() == [0.1, 0.2]


def test_inverting_a_known_log_curve_recovers_the_budget() -> None:
    budgets = [26, 64, 128, 256]

    def curve(n: float) -> float:
        return 0.6 + 0.05 * math.log(n)

    scores = [curve(n) for n in budgets]
    for true_n in (26, 37, 100, 200, 256):
        n, status = invert_curve(budgets, scores, curve(true_n))
        assert status == ON and n == pytest.approx(true_n, rel=1e-9)
    assert invert_curve(budgets, scores, curve(400)) == (math.inf, BEYOND)
    assert invert_curve(budgets, scores, curve(10)) == (-math.inf, BELOW)
    # a dip from noise: pooled, and the first budget reaching the target is the answer
    n, status = invert_curve(budgets, [0.7, 0.8, 0.78, 0.9], 0.79)
    assert status == ON and n == pytest.approx(64.0)
    with pytest.raises(ValueError, match="ascending"):
        invert_curve([64, 26], [0.7, 0.8], 0.75)


def test_equivalent_real_interval_covers_the_true_budget_on_a_noisy_known_curve() -> None:
    """Replicates of a known log curve and of an arm-(2) score that sits exactly on it at n = 100 (26 real
    + 74 added): the estimate is 100, the interval covers it, worth covers 74; a score above the full
    split's is beyond the curve, one below the first point below it."""
    budgets = np.array([26, 64, 128, 256])
    rng = np.random.default_rng(0)
    b = 400

    def curve(n):
        return 0.6 + 0.05 * np.log(n)

    shared = rng.normal(0, 0.01, (b, 1))  # paired noise: a hard image draw lowers every point
    curve_boot = curve(budgets)[None, :] + shared + rng.normal(0, 0.004, (b, len(budgets)))
    target_boot = curve(100.0) + shared[:, 0] + rng.normal(0, 0.004, b)
    res = equivalent_real(
        budgets.tolist(), curve(budgets).tolist(), curve_boot, float(curve(100.0)), target_boot, 26, 74
    )
    assert res["status"] == ON and res["equivalent_real"] == pytest.approx(100.0)
    assert covers(res["equivalent_real_ci"], 100.0) and covers(res["worth_ci"], 74.0)
    assert res["worth_share"] == pytest.approx(1.0)
    lo, hi = res["equivalent_real_ci"]
    assert 64 < lo < 100 < hi < 160, res  # informative, not just "covers"
    above = equivalent_real(
        budgets.tolist(), curve(budgets).tolist(), curve_boot, float(curve(1000.0)), target_boot + 0.1, 26, 74
    )
    assert (
        above["status"] == BEYOND
        and above["equivalent_real"] == BEYOND
        and above["equivalent_real_ci"][1] == BEYOND
    )
    below = equivalent_real(
        budgets.tolist(), curve(budgets).tolist(), curve_boot, float(curve(10.0)), target_boot - 0.2, 26, 74
    )
    assert (
        below["status"] == BELOW
        and below["worth_ci"] == [BELOW, BELOW]
        and not covers(below["worth_ci"], 0.0)
    )


def test_censored_interval_keeps_infinite_replicates() -> None:
    reps = np.array([1.0, 2.0, 3.0] + [math.inf] * 97)
    assert Interval.censored(reps).to_json() == [3.0, math.inf]
    assert Interval.censored(np.arange(1001.0)).to_json() == [25.0, 975.0]
    assert Interval.censored(np.array([-math.inf] * 10 + [5.0] * 990)).low == 5.0


def test_external_test_set_maps_labels_to_the_task_and_counts_what_it_drops(tmp_path) -> None:
    from types import SimpleNamespace

    from lesion_lightning.data.datamodule import LesionDataModule
    from lesion_lightning.downstream.external import external_test_set

    root = tmp_path / "external"
    LesionDataModule(
        root=str(root), image_size=48, synthetic={"num_images": 12, "image_size": 48, "seed": 3}
    ).prepare_data()
    hp = SimpleNamespace(image_size=32, resize="squash", normalization="minmax")
    both, info = external_test_set(root, hp, ["nevus", "melanoma"], tmp_path / "cache")
    assert info["n"] == len(both) == 12 and info["dropped"] == {}
    assert both[0]["image"].shape == (3, 32, 32)  # preprocessed like the real data, not at its own 48 px
    nevi, info = external_test_set(root, hp, ["melanoma", "nevus"][1:], tmp_path / "cache")
    assert set(nevi.labels.tolist()) == {0} and info["n"] + info["dropped"]["melanoma"] == 12
    assert info["class_counts"] == {"nevus": info["n"]}
    # labels follow the task's order, not the folder's
    swapped, _ = external_test_set(root, hp, ["melanoma", "nevus"], tmp_path / "cache")
    flipped, _ = external_test_set(root, hp, ["nevus", "melanoma"], tmp_path / "cache")
    assert (swapped.labels == 1 - flipped.labels).all()
    with pytest.raises(ValueError, match="no image of the task's classes"):
        external_test_set(root, hp, ["vascular"], tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="external_test"):
        external_test_set(tmp_path / "missing", hp, ["nevus"], tmp_path / "cache")


def test_fresh_synthetic_sets_per_seed_are_disjoint_and_used_by_their_seed(tmp_path) -> None:
    """resample_synthetic_per_seed: the stage generates seeds x the per-seed need and cuts it into one
    pool per seed; arm (2) and arm (3) of seed k draw only from pool k."""
    from lesion_lightning.data.transforms import ImageTransform
    from lesion_lightning.downstream.curve import ONLY, PLUS, BudgetSettings, plan_points
    from lesion_lightning.downstream.plan import samples_needed
    from lesion_lightning.downstream.stage import build_pools

    names = ["nevus", "melanoma"]
    real = type("Real", (), {"labels": np.array([0] * 12 + [1] * 4), "ids": [f"r{i}" for i in range(16)]})()
    settings = BudgetSettings(fractions=(0.5, 1.0), seeds=(0, 1, 2), synthetic_per_class="auto")
    per_seed, planned = samples_needed({"nevus": 12, "melanoma": 4}, settings)
    # auto at 0.5: nevus 12 - 6, melanoma 12 - 2; arm (3) matches the full split (12, 4)
    assert per_seed == {"nevus": 12, "melanoma": 10} and planned["real_plus_synthetic"]["0.5"] == {
        "nevus": 6,
        "melanoma": 10,
    }
    files = {c: [tmp_path / f"{c}_{i}.png" for i in range(3 * n)] for c, n in per_seed.items()}
    pools = build_pools(files, names, per_seed, 3, ImageTransform(None, "minmax"), 32)
    seen = [set(map(str, p.files)) for p in pools]
    assert all(len(s) == 22 for s in seen) and not (
        seen[0] & seen[1] or seen[1] & seen[2] or seen[0] & seen[2]
    )
    plans, _ = plan_points(real, pools, names, settings)
    for plan in plans:
        if plan.arm in (PLUS, ONLY):
            for k in range(3):
                assert set(plan.synthetic[k].identity()) <= seen[k], (plan.key, k)
    plus = next(p for p in plans if p.key == f"{PLUS}@0.5")
    assert plus.sizes(0) == {"real": 8, "synthetic": 16}


def test_a_saturated_reference_curve_makes_the_worth_not_identifiable() -> None:
    """AUROC 0.996 for arm (2) against a (1b) curve that reaches 1.000 at its second budget: inverting
    would read "worth minus most of the real images"; the point is flagged as on the plateau instead."""
    n = [8, 25, 77, 256]
    rng = np.random.default_rng(0)
    flat_top = np.array([0.94, 1.0, 1.0, 1.0])
    boot = np.clip(flat_top + rng.normal(0, 0.005, (200, 4)), 0, 1)
    target_boot = np.clip(0.996 + rng.normal(0, 0.005, 200), 0, 1)
    eq = equivalent_real(n, flat_top, boot, 0.996, target_boot, n_own=256, added=128)
    assert eq["plateau"] and eq["worth"] < -200  # the raw inversion is the misleading number
    assert "not identifiable" in worth_cell(eq)
    # a curve still rising at its last budget is invertible: a real number, no flag
    rising = np.array([0.6, 0.7, 0.8, 0.9])
    eq = equivalent_real(
        n, rising, rising + rng.normal(0, 0.01, (200, 4)), 0.75, 0.75 + rng.normal(0, 0.01, 200), 25, 128
    )
    assert not eq["plateau"] and "worth ≈" in worth_cell(eq)
