"""Synthetic lesions written in the ISIC Archive on-disk layout (``<isic_id>.jpg`` + ``metadata.csv``).

The pictures come from :mod:`lesion_lightning.data.synthetic_render`.

A lesion may be photographed 1-3 times: every view re-renders the same lesion (its shape,
textures and colours come from the lesion's own seed) under a small rotation, shift, zoom and
lighting change, with its own hairs and vignette. Lesions belong to patients (1-3 each), who
carry the skin tone, sex and age, so grouped splits by ``lesion_id``/``patient_id`` are
meaningful.

Determinism: image ``i`` depends only on ``(seed, i, image_size)`` and the class/hair settings
(per-patient, per-lesion and per-image generators seeded by ``np.random.default_rng([seed, ...])``),
so it is identical whether 10 or 1000 images are generated.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lesion_lightning.data.synthetic_render import (
    CLASSES,
    GENERATOR_VERSION,
    Lesion,
    check_size,
    render,
    render_lesion,
    sample_lesion,
    sample_view,
    skin_tone,
)
from lesion_lightning.utils.io import atomic_write

__all__ = ["CLASSES", "GENERATOR_VERSION", "render_lesion", "synthetic_params_match", "write_synthetic_isic"]

METADATA_COLUMNS: tuple[str, ...] = (
    "isic_id",
    "diagnosis",
    "benign_malignant",
    "lesion_id",
    "patient_id",
    "age_approx",
    "sex",
    "anatom_site_general",
)
PARAMS_FILE = "synthetic.json"
_BENIGN_MALIGNANT = {"nevus": "benign", "melanoma": "malignant"}
_SITES = (
    "anterior torso",
    "posterior torso",
    "lower extremity",
    "upper extremity",
    "head/neck",
    "lateral torso",
    "palms/soles",
)
_SITE_WEIGHTS = np.array([0.22, 0.26, 0.2, 0.15, 0.1, 0.04, 0.03])


# ----------------------------------------------------------------------------------------------
# the ISIC-layout dataset
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ImagePlan:
    index: int
    lesion_index: int
    patient_index: int
    diagnosis: str
    age: int
    sex: str
    site: str
    skin_rgb: np.ndarray


def _lesion_diagnoses(seed: int, melanoma_fraction: float) -> Iterator[str]:
    """Diagnosis of lesion 0, 1, 2, ...: the melanoma share is exact per block of 8, order shuffled."""
    block = 8
    phase = float(np.random.default_rng([seed, 4]).random())
    b = 0
    while True:
        n_mel = math.floor((b + 1) * block * melanoma_fraction + phase) - math.floor(
            b * block * melanoma_fraction + phase
        )
        order = np.random.default_rng([seed, 3, b]).permutation(block)
        for k in range(block):
            yield "melanoma" if order[k] < n_mel else "nevus"
        b += 1


def _plan(num_images: int, seed: int, melanoma_fraction: float) -> list[_ImagePlan]:
    """Patients (1-3 lesions) -> lesions (1-3 images) -> images, walked in order.

    The walk never looks at ``num_images`` except to stop, so image i is the same in any prefix.
    """
    plans: list[_ImagePlan] = []
    diagnoses = _lesion_diagnoses(seed, melanoma_fraction)
    lesion_index = 0
    patient = 0
    while len(plans) < num_images:
        prng = np.random.default_rng([seed, 0, patient])
        n_lesions = int(prng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        sex = "male" if prng.random() < 0.5 else "female"
        age = int(np.clip(prng.normal(52.0, 16.0), 15, 85))
        skin = skin_tone(prng)
        for _ in range(n_lesions):
            diagnosis = next(diagnoses)
            lrng = np.random.default_rng([seed, 5, lesion_index])
            site = _SITES[int(lrng.choice(len(_SITES), p=_SITE_WEIGHTS / _SITE_WEIGHTS.sum()))]
            n_views = int(lrng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
            lesion_age = 5 * round((age + int(lrng.integers(0, 3))) / 5)
            for _ in range(n_views):
                if len(plans) == num_images:
                    return plans
                plans.append(
                    _ImagePlan(len(plans), lesion_index, patient, diagnosis, lesion_age, sex, site, skin)
                )
            lesion_index += 1
        patient += 1
    return plans


def _params(
    num_images: int,
    image_size: int,
    seed: int,
    melanoma_fraction: float,
    hair_probability: float,
    jpeg_quality: int,
) -> dict[str, int | float | str]:
    return {
        "generator": "lesion_lightning.data.synthetic",
        "version": GENERATOR_VERSION,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "melanoma_fraction": float(melanoma_fraction),
        "hair_probability": float(hair_probability),
        "jpeg_quality": int(jpeg_quality),
    }


def write_synthetic_isic(
    root: str | Path,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    melanoma_fraction: float = 0.5,
    hair_probability: float = 0.3,
    jpeg_quality: int = 95,
    progress: bool = False,
) -> Path:
    """Write ``num_images`` synthetic lesions to ``root`` in the layout of an ``isic`` CLI download.

    ``root/ISIC_0000000.jpg ...``, ``root/metadata.csv`` (columns ``METADATA_COLUMNS``) and
    ``root/synthetic.json`` (the generation parameters, see :func:`synthetic_params_match`).
    Everything is written to a temporary sibling first (``utils.io.atomic_write``) and renamed to
    ``root`` when complete.
    Raises FileExistsError if ``root`` already holds a ``metadata.csv``.
    """
    root = Path(root)
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    check_size(image_size)
    if not 0.0 <= melanoma_fraction <= 1.0:
        raise ValueError(f"melanoma_fraction must be in [0, 1], got {melanoma_fraction!r}")
    if not 0.0 <= hair_probability <= 1.0:
        raise ValueError(f"hair_probability must be in [0, 1], got {hair_probability!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality!r}")
    if (root / "metadata.csv").exists():
        raise FileExistsError(
            f"{root} already holds a dataset (metadata.csv); reuse it, check it with "
            f"synthetic_params_match(), or delete the folder to regenerate"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not an empty folder; choose another data.root or remove it"
        )

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        plans = _plan(num_images, seed, melanoma_fraction)
        items = plans
        if progress:
            from rich.progress import track

            items = track(plans, description=f"synthetic lesions -> {root}")
        lesion_cache: tuple[int, Lesion] | None = None
        rows = []
        for p in items:
            if lesion_cache is None or lesion_cache[0] != p.lesion_index:
                lrng = np.random.default_rng([seed, 1, p.lesion_index])
                lesion_cache = (p.lesion_index, sample_lesion(p.diagnosis, lrng, p.skin_rgb))
            view = sample_view(np.random.default_rng([seed, 2, p.index]), hair_probability)
            isic_id = f"ISIC_{p.index:07d}"
            Image.fromarray(render(lesion_cache[1], view, image_size)).save(
                tmp / f"{isic_id}.jpg", quality=jpeg_quality
            )
            rows.append(
                {
                    "isic_id": isic_id,
                    "diagnosis": p.diagnosis,
                    "benign_malignant": _BENIGN_MALIGNANT[p.diagnosis],
                    "lesion_id": f"IL_{p.lesion_index:07d}",
                    "patient_id": f"IP_{p.patient_index:07d}",
                    "age_approx": p.age,
                    "sex": p.sex,
                    "anatom_site_general": p.site,
                }
            )
        with open(tmp / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        params = _params(num_images, image_size, seed, melanoma_fraction, hair_probability, jpeg_quality)
        (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")

    try:
        # the rename replaces an absent or empty root (checked above) and refuses a filled one
        atomic_write(root, write)
    except OSError as e:
        if (root / "metadata.csv").exists():  # another process finished first
            raise FileExistsError(f"{root} was written by another process meanwhile; reuse it") from e
        raise
    return root


def synthetic_params_match(root: str | Path, **params: int | float) -> bool:
    """True if ``root`` holds a complete synthetic dataset generated with these parameters.

    Pass any of ``num_images, image_size, seed, melanoma_fraction, hair_probability, jpeg_quality``;
    a folder from another generator version, a real ISIC folder or a half-written one never matches.
    """
    known = set(_params(1, 16, 0, 0.0, 0.0, 1)) - {"generator", "version"}
    unknown = set(params) - known
    if unknown:
        raise TypeError(f"unknown synthetic parameter(s) {sorted(unknown)}; expected some of {sorted(known)}")
    root = Path(root)
    try:
        stored = json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not (root / "metadata.csv").is_file() or stored.get("version") != GENERATOR_VERSION:
        return False
    return all(key in stored and stored[key] == value for key, value in params.items())
