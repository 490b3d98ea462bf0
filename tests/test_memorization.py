"""Memorization: nearest-training-neighbour distances in code space and feature space, on constructed grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion_lightning.metrics import memorization
from lesion_lightning.metrics.memorization import (
    closest_pairs,
    memorization_summary,
    nearest_euclidean,
    nearest_hamming,
)


def _grids(n: int, seed: int, k: int = 16, size: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=(n, size, size)).astype(np.uint16)


@pytest.mark.parametrize("block", [2**26, 50])  # one block, and many small ones
def test_hamming_matches_brute_force(monkeypatch, block):
    monkeypatch.setattr(memorization, "_MAX_BLOCK", block)
    queries, refs = _grids(7, 0), _grids(11, 1)
    refs[3] = queries[2]  # an exact copy
    dist, row = nearest_hamming(queries, refs)
    brute = (queries[:, None] != refs[None]).reshape(7, 11, -1).mean(-1)
    assert dist == pytest.approx(brute.min(1))
    assert dist[2] == 0 and row[2] == 3
    assert np.all(brute[np.arange(7), row] == brute.min(1))


def test_copied_samples_are_flagged_and_fresh_ones_are_not():
    train, test = _grids(200, 0), _grids(100, 1)
    copies = train[:30].copy()
    copies[:, 0, 0] = (copies[:, 0, 0] + 1) % 16  # near-copies: one position changed
    fresh = _grids(70, 2)
    gen = np.concatenate([copies, fresh])
    gen_dist, gen_row = nearest_hamming(gen, train)
    test_dist, _ = nearest_hamming(test, train)
    out = memorization_summary(gen_dist, test_dist, num_bootstrap=200)
    assert out["memorized_fraction"] == pytest.approx(0.3, abs=0.02)  # the 30 copies, few of the fresh
    lo, hi = out["memorized_fraction_ci"]
    assert lo < 0.3 < hi
    assert out["n_generated"] == 100 and out["n_test"] == 100
    assert out["test_fraction_below"] <= 0.01
    assert set(gen_row[closest_pairs(gen_dist, 30)]) == set(range(30))

    no_copies = memorization_summary(nearest_hamming(fresh, train)[0], test_dist, num_bootstrap=200)
    assert no_copies["memorized_fraction"] < 0.05


def test_euclidean_nearest_and_size_checks():
    refs = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    dist, row = nearest_euclidean(torch.tensor([[9.0, 0.0], [0.0, 4.0]]), refs, chunk=1)
    assert dist == pytest.approx([1.0, 1.0]) and list(row) == [1, 2]
    with pytest.raises(ValueError, match="differ in size"):
        nearest_hamming(_grids(2, 0, size=4), _grids(2, 0, size=6))
