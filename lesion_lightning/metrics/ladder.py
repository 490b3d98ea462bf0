"""The FID ladder: where a generator loses realism, on one extractor against one real reference.

Every rung compares a set of images with the same real reference (the evaluated split, `eval.max_real`
seeded rows of it) on the same features, so the rungs differ only in what is compared:

  floor            a seeded train subset of the reference's size: two real sets of this n, the best
                   any generator can score here (FID's small-sample bias and the split's spread)
  reconstruction   the VQ-VAE's reconstructions of the reference images themselves (rFID): the
                   ceiling the first stage puts on samples decoded by it
  samples_matched  a seeded subset of the samples of the reference's size: comparable with the two
                   rungs above (FID depends on n)
  samples          all generated images (the generation section's FID)

Each rung holds metrics.distribution.set_metrics' output (FID, KID, precision/recall, n both sides,
intervals) plus what was compared. A rung whose set is smaller than the reference is flagged
`matched_n: false`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from lesion_lightning.metrics.distribution import set_metrics
from lesion_lightning.metrics.generation import extract_features
from lesion_lightning.metrics.naming import extractor_tag, metric_key

RUNGS = ("floor", "reconstruction", "samples_matched", "samples")
RUNG_LABELS = {
    "floor": "floor: train subset vs reference",
    "reconstruction": "rFID: VQ-VAE reconstructions of the reference",
    "samples_matched": "samples at the reference's n",
    "samples": "all samples",
}
# the numbers of each rung that go to the loggers as `{split}/ladder/{rung}/{key}`
# (set metrics on a stand-in extractor carry its name: metrics.naming.metric_key)
FLAT_RUNG_KEYS = ("fid", "fid_inf", "kid", "precision", "recall", "n_compared", "n_real")


def seeded_rows(num_items: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct rows of range(num_items) drawn with `seed` (sorted); all rows when size >= num_items."""
    if size >= num_items:
        return np.arange(num_items)
    return np.sort(np.random.default_rng(seed).choice(num_items, size=size, replace=False))


def _images(dataset, rows: np.ndarray, batch_size: int, num_workers: int) -> Iterator[torch.Tensor]:
    loader = DataLoader(
        Subset(dataset, rows.tolist()), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    for batch in loader:
        yield batch["image"].float()


@torch.no_grad()
def reconstructions(vqvae, batches, device: torch.device) -> Iterator[torch.Tensor]:
    """Image batches -> the VQ-VAE's reconstructions, clamped to [0, 1] as a decoded sample is."""
    for images in batches:
        yield vqvae.net(images.to(device)).recon.float().clamp(0, 1).cpu()


def _rung(reference: torch.Tensor, compared: torch.Tensor, what: str, options: dict) -> dict:
    rung = set_metrics(reference, compared, **options)
    rung.update({"compared": what, "n_compared": len(compared), "matched_n": len(compared) == len(reference)})
    return rung


def fid_ladder(
    extractor: torch.nn.Module,
    extractor_name: str,
    reference: torch.Tensor,
    reference_rows: np.ndarray,
    real_dataset,
    train_dataset,
    vqvae,
    fake: torch.Tensor | None,
    size: tuple[int, int],
    options: dict,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    device: torch.device,
) -> dict:
    """The four rungs (samples ones only when `fake` holds generated features).

    reference: (m, F) features of `real_dataset[reference_rows]` at `size`; fake: (n, F) or None;
    options: set_metrics keyword arguments (the generation section's, so the rungs match it).
    """
    m = len(reference)
    train_rows = seeded_rows(len(train_dataset), m, seed)
    floor = extract_features(
        extractor, _images(train_dataset, train_rows, batch_size, num_workers), device, size=size
    )
    recon = extract_features(
        extractor,
        reconstructions(vqvae, _images(real_dataset, reference_rows, batch_size, num_workers), device),
        device,
        size=size,
    )
    rungs: dict[str, dict] = {
        "floor": _rung(
            reference, floor, f"seeded train subset (seed={seed}) of {len(train_dataset)}", options
        ),
        "reconstruction": _rung(reference, recon, "VQ-VAE reconstructions of the reference images", options),
    }
    if fake is not None:
        fake_rows = torch.from_numpy(seeded_rows(len(fake), m, seed))
        rungs["samples_matched"] = _rung(
            reference, fake[fake_rows], f"seeded subset (seed={seed}) of {len(fake)} samples", options
        )
        rungs["samples"] = _rung(reference, fake, "all samples", options)
    for rung in rungs.values():
        rung["feature_extractor"] = extractor_name
    return {
        "feature_extractor": extractor_name,
        "num_features": int(reference.shape[1]),
        "image_size": list(size),
        "n_reference": m,
        "rungs": rungs,
    }


def flat_ladder(ladder: dict, split: str) -> dict[str, float]:
    """`{split}/ladder/{rung}/{key}` (+ `_ci_low` / `_ci_high` where an interval exists) for the loggers;
    on a stand-in extractor the set metrics are named after it (`fid_RandomConvFeatures16`)."""
    flat: dict[str, float] = {}
    for name, rung in (ladder.get("rungs") or {}).items():
        for key in FLAT_RUNG_KEYS:
            value = rung.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"{split}/ladder/{name}/{metric_key(key, rung)}"] = float(value)
            interval = rung.get(f"{key}_ci")
            if isinstance(interval, list | tuple) and len(interval) == 2:
                flat[f"{split}/ladder/{name}/{metric_key(key + '_ci_low', rung)}"] = float(interval[0])
                flat[f"{split}/ladder/{name}/{metric_key(key + '_ci_high', rung)}"] = float(interval[1])
    return flat


def _with_ci(rung: dict, key: str, fmt: str) -> str:
    value, interval = rung.get(key), rung.get(f"{key}_ci")
    if not isinstance(value, int | float):
        return "-"
    text = format(value, fmt)
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{format(interval[0], fmt)}, {format(interval[1], fmt)}]"
    return text


def ladder_rows(ladder: dict) -> list[list[str]]:
    """One row per rung: rung, n compared / n real, FID, FID-infinity, KID, precision, recall [CIs]."""
    rows = []
    for name in RUNGS:
        rung = (ladder.get("rungs") or {}).get(name)
        if rung is None:
            continue
        n = f"{rung.get('n_compared')} / {rung.get('n_real')}"
        if isinstance(rung.get("n_compared"), int) and rung["n_compared"] < (rung.get("n_real") or 0):
            n += " (fewer than the reference)"
        rows.append(
            [
                RUNG_LABELS[name],
                n,
                _with_ci(rung, "fid", ".4g"),
                _with_ci(rung, "fid_inf", ".4g"),
                _with_ci(rung, "kid", ".3g"),
                _with_ci(rung, "precision", ".3f"),
                _with_ci(rung, "recall", ".3f"),
            ]
        )
    return rows


LADDER_HEADER = [
    "rung",
    "n compared / real",
    "FID [95% CI]",
    "FID-inf [95% CI]",
    "KID [95% CI]",
    "precision [95% CI]",
    "recall [95% CI]",
]


def ladder_header(ladder: dict) -> list[str]:
    """LADDER_HEADER, the set metrics named after a stand-in extractor (never a bare "FID" for them)."""
    tag = extractor_tag(ladder)
    if not tag:
        return list(LADDER_HEADER)
    return LADDER_HEADER[:2] + [
        f"{h.split(' ', 1)[0]}_{tag}" + h[len(h.split(" ", 1)[0]) :] for h in LADDER_HEADER[2:]
    ]


def format_ladder(ladder: dict, split: str, normalization: str | None) -> str:
    """The console table, titled with the reference, the extractor and the image scale."""
    title = (
        f"FID ladder vs {ladder.get('n_reference')} real {split} images, {ladder.get('feature_extractor')}, "
        f"images at {'x'.join(map(str, ladder.get('image_size') or []))}, data.normalization={normalization}"
    )
    rows = [ladder_header(ladder), *ladder_rows(ladder)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(LADDER_HEADER))]
    lines = [title] + ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
