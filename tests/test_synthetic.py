"""The synthetic ISIC-like generator: determinism, on-disk layout, class differences, atomic writes."""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_lightning.data import synthetic
from lesion_lightning.data.synthetic import (
    CLASSES,
    render_lesion,
    synthetic_params_match,
    write_synthetic_isic,
)

COLUMNS = [
    "isic_id",
    "diagnosis",
    "benign_malignant",
    "lesion_id",
    "patient_id",
    "age_approx",
    "sex",
    "anatom_site_general",
]


def _images(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted(root.glob("*.jpg"))}


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _radius(size: int) -> np.ndarray:
    """(H, W) distance of each pixel centre from the image centre, 1 = half the width."""
    c = (np.arange(size) + 0.5) / (size / 2) - 1
    return np.hypot(c[:, None], c[None, :])


def _lesion_stats(img: np.ndarray) -> tuple[float, float, float]:
    """(area fraction, 180-degree asymmetry, colour spread) of the dark blob in a rendered image.

    The lesion is what is clearly darker than the skin (80th percentile of the brightness inside
    the dermatoscope's field); asymmetry is the share of lesion pixels whose point reflection
    through the lesion's centroid is not lesion; colour spread is the mean per-channel std inside.
    """
    size = img.shape[0]
    img = img.astype(np.float64)
    lum = img.mean(-1)
    inner = _radius(size) < 0.8
    lesion = inner & (lum < 0.75 * np.percentile(lum[inner], 80))
    ys, xs = np.nonzero(lesion)
    ry = np.clip(np.round(2 * ys.mean() - ys).astype(int), 0, size - 1)
    rx = np.clip(np.round(2 * xs.mean() - xs).astype(int), 0, size - 1)
    return float(lesion.mean()), float(1 - lesion[ry, rx].mean()), float(img[lesion].std(0).mean())


def test_render_lesion_shape_and_determinism() -> None:
    a = render_lesion(48, "melanoma", np.random.default_rng(3))
    b = render_lesion(48, "melanoma", np.random.default_rng(3))
    c = render_lesion(48, "melanoma", np.random.default_rng(4))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 3
    with pytest.raises(ValueError, match="diagnosis"):
        render_lesion(48, "basal cell carcinoma", np.random.default_rng(0))


def test_classes_differ_in_the_documented_direction() -> None:
    # nevus: small, symmetric, uniform; melanoma: larger, asymmetric, multicoloured
    stats = {
        d: np.array(
            [_lesion_stats(render_lesion(64, d, np.random.default_rng([11, i]), 0.0)) for i in range(20)]
        )
        for d in CLASSES
    }
    nevus, melanoma = np.median(stats["nevus"], 0), np.median(stats["melanoma"], 0)
    assert melanoma[0] > 2.0 * nevus[0], f"lesion area: melanoma {melanoma[0]:.3f} vs nevus {nevus[0]:.3f}"
    assert melanoma[1] > 1.8 * nevus[1], f"asymmetry: melanoma {melanoma[1]:.3f} vs nevus {nevus[1]:.3f}"
    assert melanoma[2] > 1.3 * nevus[2], f"colour spread: melanoma {melanoma[2]:.1f} vs nevus {nevus[2]:.1f}"


def test_vignette_corners_and_skin_toned_field() -> None:
    size = 64
    ring = (_radius(size) > 0.6) & (_radius(size) < 0.8)  # skin between lesion and vignette edge
    for i in range(8):
        img = render_lesion(size, CLASSES[i % 2], np.random.default_rng([5, i]), hair_probability=0.0)
        img = img.astype(np.float64)
        for corner in (img[:4, :4], img[:4, -4:], img[-4:, :4], img[-4:, -4:]):
            assert corner.mean() < 25, "outside the dermatoscope's circle must be dark"
        r, g, b = (np.median(img[..., k][ring]) for k in range(3))
        assert r > b + 15 and r > 100, f"skin should be bright and reddish, got RGB medians {r, g, b}"


def test_hair_probability_adds_dark_lines() -> None:
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    bald = render_lesion(96, "nevus", rng_a, hair_probability=0.0)
    hairy = render_lesion(96, "nevus", rng_b, hair_probability=1.0)
    # the same random draws up to the hair decision, so only hairs differ (darker pixels)
    darker = (bald.astype(int) - hairy.astype(int)).mean(-1) > 40
    assert darker.sum() > 30
    assert (hairy.astype(int) - bald.astype(int)).max() <= 2


def test_write_is_deterministic_and_prefix_stable(tmp_path: Path) -> None:
    a = write_synthetic_isic(tmp_path / "a", 12, image_size=32, seed=0)
    b = write_synthetic_isic(tmp_path / "b", 12, image_size=32, seed=0)
    short = write_synthetic_isic(tmp_path / "short", 5, image_size=32, seed=0)
    other = write_synthetic_isic(tmp_path / "other", 12, image_size=32, seed=1)
    ia, ib, ishort, iother = _images(a), _images(b), _images(short), _images(other)
    assert list(ia) == [f"ISIC_{i:07d}" for i in range(12)]
    for k in ia:
        np.testing.assert_array_equal(ia[k], ib[k])
    for k in ishort:  # image i does not depend on how many images are generated
        np.testing.assert_array_equal(ia[k], ishort[k])
    assert _rows(short) == _rows(a)[:5]
    assert np.mean([np.abs(ia[k].astype(int) - iother[k].astype(int)).mean() for k in ia]) > 5


def test_metadata_layout_and_groups(tmp_path: Path) -> None:
    root = write_synthetic_isic(tmp_path / "isic", 40, image_size=16, seed=2)
    with open(root / "metadata.csv", newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    rows = _rows(root)
    assert len(rows) == 40
    assert {r["isic_id"] for r in rows} == {p.stem for p in root.glob("*.jpg")}
    assert sorted(p.name for p in root.iterdir() if p.suffix != ".jpg") == ["metadata.csv", "synthetic.json"]
    for r in rows:
        assert re.fullmatch(r"ISIC_\d{7}", r["isic_id"])
        assert re.fullmatch(r"IL_\d{7}", r["lesion_id"]) and re.fullmatch(r"IP_\d{7}", r["patient_id"])
        assert (r["diagnosis"], r["benign_malignant"]) in {("nevus", "benign"), ("melanoma", "malignant")}
        assert r["sex"] in {"male", "female"} and int(r["age_approx"]) % 5 == 0
    lesions: dict[str, list[dict[str, str]]] = defaultdict(list)
    patients: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        lesions[r["lesion_id"]].append(r)
        patients[r["patient_id"]].add(r["lesion_id"])
    for views in lesions.values():  # one lesion: one diagnosis, one patient
        assert len({(v["diagnosis"], v["patient_id"]) for v in views}) == 1
    assert max(len(v) for v in lesions.values()) > 1, "some lesions must be imaged more than once"
    assert max(len(v) for v in patients.values()) > 1, "some patients must have several lesions"
    assert 0.3 <= np.mean([r["diagnosis"] == "melanoma" for r in rows]) <= 0.7


def test_views_of_one_lesion_are_similar_but_not_identical(tmp_path: Path) -> None:
    root = write_synthetic_isic(tmp_path / "isic", 30, image_size=64, seed=4, hair_probability=0.0)
    images = _images(root)
    lesions: dict[str, list[str]] = defaultdict(list)
    for r in _rows(root):
        lesions[r["lesion_id"]].append(r["isic_id"])
    multi = [ids for ids in lesions.values() if len(ids) > 1]
    assert multi
    for ids in multi:
        areas = [_lesion_stats(images[i])[0] for i in ids]
        assert max(areas) < 1.5 * min(areas), f"views of one lesion differ too much in size: {areas}"
        assert np.abs(images[ids[0]].astype(int) - images[ids[1]].astype(int)).mean() > 1


def test_melanoma_fraction_extremes(tmp_path: Path) -> None:
    for fraction, expected in ((0.0, {"nevus"}), (1.0, {"melanoma"})):
        root = write_synthetic_isic(tmp_path / f"f{fraction}", 10, image_size=16, melanoma_fraction=fraction)
        assert {r["diagnosis"] for r in _rows(root)} == expected


def test_atomic_write_and_existing_root(tmp_path: Path) -> None:
    root = write_synthetic_isic(tmp_path / "isic", 4, image_size=16)
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(FileExistsError, match="metadata.csv"):
        write_synthetic_isic(root, 4, image_size=16)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_synthetic_isic(busy, 4, image_size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(_rows(write_synthetic_isic(empty, 3, image_size=16))) == 3


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_render, calls = synthetic.render, []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_isic(tmp_path / "isic", 6, image_size=16)
    assert list(tmp_path.iterdir()) == []


def test_params_file_and_match(tmp_path: Path) -> None:
    root = write_synthetic_isic(tmp_path / "isic", 3, image_size=16, seed=7, hair_probability=0.5)
    params = json.loads((root / "synthetic.json").read_text())
    assert params["num_images"] == 3 and params["image_size"] == 16 and params["seed"] == 7
    assert synthetic_params_match(root, num_images=3, image_size=16, seed=7, hair_probability=0.5)
    assert not synthetic_params_match(root, num_images=3, image_size=32)
    assert not synthetic_params_match(root, seed=8)
    assert not synthetic_params_match(tmp_path / "missing", seed=7)
    with pytest.raises(TypeError, match="imagesize"):
        synthetic_params_match(root, imagesize=16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_images": 0}, "num_images"),
        ({"image_size": 8}, "image_size"),
        ({"melanoma_fraction": 1.5}, "melanoma_fraction"),
        ({"hair_probability": -0.1}, "hair_probability"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"num_images": 2, "image_size": 16} | kwargs
    with pytest.raises(ValueError, match=match):
        write_synthetic_isic(tmp_path / "isic", **args)
    assert not (tmp_path / "isic").exists()
