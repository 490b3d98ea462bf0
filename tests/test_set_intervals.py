"""The set metrics' intervals, tested against a known truth (DESIGN: statistics against a simulation).

Two Gaussians in 64 dims, real N(0, I) and generated N(0.1 * 1, 1.2^2 I): the Frechet distance is
||mu||^2 + sum (1 - s_i)^2 = 0.64 + 2.56 = 3.2 exactly, and the population MMD^2 of KID's cubic kernel
has a closed form (E (x.y / d + 1)^3 from the first three moments of x.y, below). 50 seeded draws of
250 real vs 250 generated: every interval must contain its own estimate, and the KID and FID-infinity
intervals must cover the truth in >= 85 % of draws. Plain FID is biased upwards at this n (its mean
here is ~13.9 against 3.2): its interval is for FID at these set sizes, and must *not* cover 3.2.
"""

from __future__ import annotations

import pytest
import torch

from lesion_lightning.metrics.distribution import set_metrics

DIMS, N, DRAWS = 64, 250, 50
MU, SCALE = 0.1, 1.2


def _expected_cubic_kernel(m1, s1, m2, s2) -> float:
    """E (x.y / d + 1)^3 for independent x ~ N(m1, S1), y ~ N(m2, S2).

    With t = x.y: E t = m1.m2; E t^2 = tr((S1 + m1 m1')(S2 + m2 m2')); E t^3 = E_y[(m1.y)^3 + 3 (m1.y)(y'S1 y)]
    = m^3 + 3 m v + 3 (m (m2'S1 m2 + tr S1 S2) + 2 m1'S2 S1 m2), m = m1.m2, v = m1'S2 m1.
    """
    d = len(m1)
    m = m1 @ m2
    e2 = torch.trace((s1 + torch.outer(m1, m1)) @ (s2 + torch.outer(m2, m2)))
    e3 = (
        m**3
        + 3 * m * (m1 @ s2 @ m1)
        + 3 * (m * (m2 @ s1 @ m2 + torch.trace(s1 @ s2)) + 2 * (m1 @ s2 @ s1 @ m2))
    )
    return float(1 + 3 * m / d + 3 * e2 / d**2 + e3 / d**3)


def _truth() -> tuple[float, float]:
    mu = torch.full((DIMS,), MU, dtype=torch.float64)
    zero, eye = torch.zeros(DIMS, dtype=torch.float64), torch.eye(DIMS, dtype=torch.float64)
    cov = eye * SCALE**2
    fd = float(mu.square().sum() + DIMS * (1 - SCALE) ** 2)
    mmd = (
        _expected_cubic_kernel(zero, eye, zero, eye)
        + _expected_cubic_kernel(mu, cov, mu, cov)
        - 2 * _expected_cubic_kernel(zero, eye, mu, cov)
    )
    return fd, mmd


def _draw(seed: int, n_real: int = N, n_fake: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(n_real, DIMS, generator=gen, dtype=torch.float64)
    fake = MU + SCALE * torch.randn(n_fake, DIMS, generator=gen, dtype=torch.float64)
    return real, fake


def test_the_kid_closed_form_is_the_population_value():
    """The truth itself checked by Monte Carlo: 20,000 pairs per term, within 3 standard errors."""
    _, mmd = _truth()
    real, fake = _draw(123, 20_000, 20_000)
    real2, fake2 = _draw(124, 20_000, 20_000)
    k = lambda a, b: ((a * b).sum(1) / DIMS + 1) ** 3  # noqa: E731 - paired rows: independent pairs
    terms = k(real, real2) + k(fake, fake2) - k(real, fake2) - k(fake, real2)
    assert abs(float(terms.mean()) - mmd) < 3 * float(terms.std()) / len(terms) ** 0.5


def test_intervals_contain_their_estimate_and_cover_the_truth():
    torch.set_num_threads(1)  # many tiny decompositions: threads only add overhead
    fd, mmd = _truth()
    covered = {"fid": 0, "fid_inf": 0, "kid": 0}
    for seed in range(DRAWS):
        real, fake = _draw(seed)
        out = set_metrics(
            real, fake, num_bootstrap=100, fid_splits=8, kid_subsets=5, kid_subset_size=50, seed=seed
        )
        for key in ("fid", "fid_inf", "kid", "precision", "recall"):
            low, high = out[f"{key}_ci"]
            assert low <= out[key] <= high, (seed, key, out[key], out[f"{key}_ci"])
        covered["fid"] += out["fid_ci"][0] <= fd <= out["fid_ci"][1]
        covered["fid_inf"] += out["fid_inf_ci"][0] <= fd <= out["fid_inf_ci"][1]
        covered["kid"] += out["kid_ci"][0] <= mmd <= out["kid_ci"][1]
    assert covered["kid"] >= 0.85 * DRAWS and covered["fid_inf"] >= 0.85 * DRAWS, covered
    assert covered["fid"] == 0, covered  # plain FID's small-n bias: it estimates FID at n = 250


def test_fid_is_torchmetrics_fid_and_kid_the_plain_unbiased_estimate():
    from torchmetrics.image.fid import FrechetInceptionDistance

    from lesion_lightning.metrics.generation import _Precomputed

    real, fake = _draw(7, 90, 60)
    out = set_metrics(real, fake, num_bootstrap=10, fid_splits=2, kid_subsets=5, kid_subset_size=30)
    fid = FrechetInceptionDistance(feature=_Precomputed(DIMS))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert out["fid"] == pytest.approx(float(fid.compute()), rel=1e-6)
    k = lambda a, b: (a @ b.T / DIMS + 1) ** 3  # noqa: E731
    k_rr, k_gg = k(real, real), k(fake, fake)
    unbiased = (
        (k_rr.sum() - k_rr.trace()) / (90 * 89)
        + (k_gg.sum() - k_gg.trace()) / (60 * 59)
        - 2 * k(fake, real).mean()
    )
    assert out["kid"] == pytest.approx(float(unbiased), rel=1e-9)
    assert out["n_generated"] == 60 and out["n_real"] == 90


def test_a_resample_with_duplicates_never_pairs_a_copy_with_itself():
    """KernelBootstrap's count-vector estimate == the unbiased MMD^2 over the distinct-row pairs drawn."""
    from lesion_lightning.metrics.distribution import KernelBootstrap

    real, fake = _draw(3, 12, 8)
    rows_g, rows_r = (
        torch.tensor([0, 0, 0, 1, 2, 2, 5, 7]),
        torch.tensor([1, 1, 2, 3, 4, 4, 4, 6, 8, 9, 9, 11]),
    )
    c_g = torch.bincount(rows_g, minlength=8).double()[None]
    c_r = torch.bincount(rows_r, minlength=12).double()[None]
    k = lambda a, b: (a @ b.T / DIMS + 1) ** 3  # noqa: E731

    def within(x, rows):  # mean over ordered pairs of positions holding different rows
        same = rows[:, None] == rows[None, :]
        kk = k(x[rows], x[rows])
        return float(kk[~same].mean())

    expected = within(fake, rows_g) + within(real, rows_r) - 2 * float(k(fake[rows_g], real[rows_r]).mean())
    assert float(KernelBootstrap(real, fake)(c_g, c_r)[0]) == pytest.approx(expected, rel=1e-9)


def test_reliable_needs_both_sides_and_inception():
    options = {"num_bootstrap": 2, "fid_splits": 2, "kid_subsets": 2, "kid_subset_size": 10, "prc_k": 1}
    real, fake = _draw(5, 2048, 2048)
    assert (
        set_metrics(real, fake, feature_extractor="inception-v3-compat/2048", **options)["reliable"] is True
    )
    stand_in = set_metrics(real, fake, feature_extractor="RandomConvFeatures16", **options)
    assert stand_in["reliable"] is False  # never, whatever n
    few_real = set_metrics(real[:2047], fake, feature_extractor="inception-v3-compat/2048", **options)
    assert few_real["reliable"] is False and few_real["n_real"] == 2047 and few_real["n_generated"] == 2048
    assert set_metrics(real, fake, **options)["reliable"] is False  # extractor not named: never


def test_precision_recall_on_equal_size_sets():
    """The k-NN radii depend on set size, so precision and recall are only each other's mirror on equal
    sizes: swapping the roles of the two sets swaps precision and recall exactly. The larger side is
    subsampled (no replacement) to the smaller one's size, `repeats` times."""
    from lesion_lightning.metrics.distribution import precision_recall, precision_recall_equal_n

    real, fake = _draw(11, 100, 800)
    real, fake = real[:, :8], fake[:, :8]
    same_n = precision_recall_equal_n(real, fake[:100], k=3)
    swapped = precision_recall_equal_n(fake[:100], real, k=3)
    assert same_n["prc_repeats"] == 1 and same_n["prc_n"] == 100
    assert same_n["precision"] == pytest.approx(precision_recall(real, fake[:100], k=3)["precision"])
    assert (same_n["precision"], same_n["recall"]) == pytest.approx((swapped["recall"], swapped["precision"]))
    equal = precision_recall_equal_n(real, fake, k=3, repeats=10)
    assert equal["prc_n"] == 100 and equal["prc_repeats"] == 10
    for key in ("precision", "recall"):
        assert 0 <= equal[f"{key}_ci"][0] <= equal[key] <= equal[f"{key}_ci"][1] <= 1
    assert equal["precision"] != pytest.approx(precision_recall(real, fake, k=3)["precision"], abs=1e-6)
