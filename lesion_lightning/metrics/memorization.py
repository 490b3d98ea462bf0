"""Is the generator copying training images? Nearest-training-neighbour distances of the samples,
judged against the same distances of held-out real images.

For each generated image d_gen = distance to its nearest training image; for each real test image
d_test = the same (test images are real lesions the model never saw, so their d_test is what "a new
lesion" looks like). The figure reported is

    memorized fraction = mean_i [ d_gen_i < q_1%(d_test) ]

the share of samples closer to some training image than all but 1 % of real unseen lesions are. A
generator that does not copy gives about 1 %; one that reproduces training images gives much more.

Two distance spaces:
- code space: Hamming distance between code grids (fraction of grid positions whose codes differ),
  needs only the index dataset and the sampled grids, no pretrained network, so it always exists;
- feature space: Euclidean distance between the FID extractor's features (when it is available).
"""

from __future__ import annotations

import numpy as np
import torch

from lesion_lightning.metrics.stats import mean_interval

# elements of one (queries, refs, positions) comparison block
_MAX_BLOCK = 2**26


@torch.no_grad()
def nearest_hamming(queries, refs, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) and (M, H, W) code grids -> (N,) fraction of differing positions to the nearest ref, (N,) its row.

    Blocks of queries x refs x positions bound memory (`refs` may be a memory-mapped array).
    """
    queries = torch.as_tensor(np.asarray(queries, dtype=np.int32)).reshape(len(queries), -1)
    num_refs = len(refs)
    if num_refs == 0 or len(queries) == 0:
        raise ValueError("nearest-neighbour search needs at least one query and one reference grid")
    positions = queries.shape[1]
    ref_shape = np.asarray(refs[:1]).reshape(1, -1).shape[1]
    if ref_shape != positions:
        raise ValueError(f"grids differ in size: {positions} positions vs {ref_shape} in the references")
    queries = queries.to(device)
    best = torch.full((len(queries),), -1, dtype=torch.long, device=device)  # most equal positions so far
    best_row = torch.zeros(len(queries), dtype=torch.long, device=device)
    ref_chunk = max(1, min(num_refs, _MAX_BLOCK // positions))
    query_chunk = max(1, _MAX_BLOCK // (ref_chunk * positions))
    for r_lo in range(0, num_refs, ref_chunk):
        block = np.asarray(refs[r_lo : r_lo + ref_chunk], dtype=np.int32).reshape(-1, positions)
        ref = torch.from_numpy(block).to(device)  # (m, P)
        for q_lo in range(0, len(queries), query_chunk):
            q = queries[q_lo : q_lo + query_chunk]  # (c, P)
            equal = (q[:, None, :] == ref[None, :, :]).sum(-1)  # (c, m)
            value, row = equal.max(1)
            better = value > best[q_lo : q_lo + len(q)]
            best[q_lo : q_lo + len(q)] = torch.where(better, value, best[q_lo : q_lo + len(q)])
            best_row[q_lo : q_lo + len(q)] = torch.where(better, row + r_lo, best_row[q_lo : q_lo + len(q)])
    distance = 1.0 - best.double() / positions
    return distance.cpu().numpy(), best_row.cpu().numpy()


@torch.no_grad()
def nearest_euclidean(
    queries: torch.Tensor, refs: torch.Tensor, device: torch.device | str = "cpu", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) and (M, F) features -> (N,) Euclidean distance to the nearest ref, (N,) its row."""
    if len(refs) == 0 or len(queries) == 0:
        raise ValueError("nearest-neighbour search needs at least one query and one reference")
    refs = refs.double().to(device)
    dists, rows = [], []
    for lo in range(0, len(queries), chunk):
        d = torch.cdist(queries[lo : lo + chunk].double().to(device), refs)  # (c, M)
        value, row = d.min(1)
        dists.append(value.cpu())
        rows.append(row.cpu())
    return torch.cat(dists).numpy(), torch.cat(rows).numpy()


def memorization_summary(
    gen_dist: np.ndarray,
    test_dist: np.ndarray,
    percentile: float = 1.0,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Fraction of samples nearer to a training image than the `percentile`-th percentile of test images."""
    gen_dist, test_dist = np.asarray(gen_dist, np.float64), np.asarray(test_dist, np.float64)
    if gen_dist.size == 0 or test_dist.size == 0:
        raise ValueError("memorization needs generated and test distances")
    threshold = float(np.percentile(test_dist, percentile))
    closer = (gen_dist < threshold).astype(np.float64)
    estimate = mean_interval(closer, num=num_bootstrap, seed=seed)
    return {
        "memorized_fraction": estimate.value,
        "memorized_fraction_ci": estimate.interval.to_json(),
        # what the fraction would be for unseen real lesions (about percentile / 100 by construction)
        "test_fraction_below": float((test_dist < threshold).mean()),
        "threshold": threshold,
        "percentile": percentile,
        "n_generated": int(gen_dist.size),
        "n_test": int(test_dist.size),
        "gen_to_train_median": float(np.median(gen_dist)),
        "test_to_train_median": float(np.median(test_dist)),
        "gen_to_train_min": float(gen_dist.min()),
        "test_to_train_min": float(test_dist.min()),
    }


def closest_pairs(gen_dist: np.ndarray, num: int) -> np.ndarray:
    """Rows of the `num` samples closest to a training image, closest first."""
    return np.argsort(np.asarray(gen_dist), kind="stable")[:num]
