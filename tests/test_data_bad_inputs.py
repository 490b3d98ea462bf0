"""Bad input gets a clear error naming the file (default) or is skipped and listed in bad_images.csv;
convertible image modes are converted to RGB correctly; the resize modes do what they say."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_lightning.data.cache import BadImageError, load_rgb
from lesion_lightning.data.datamodule import LesionDataModule

N = 6


def _archive(root: Path) -> Path:
    """A 6-image ISIC Archive download (24 px JPEGs + metadata.csv), one lesion per image."""
    root.mkdir(parents=True)
    rows = []
    for i in range(N):
        rgb = np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"ISIC_{i}.jpg")
        rows.append([f"ISIC_{i}", "melanoma" if i % 2 else "nevus", f"IL_{i}", f"IP_{i}"])
    _write_rows(root, rows)
    return root


def _write_rows(root: Path, rows: list[list[str]]) -> None:
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["isic_id", "diagnosis", "lesion_id", "patient_id"])
        w.writerows(rows)


def _rows(root: Path) -> list[list[str]]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.reader(f))[1:]


def _truncate(root: Path) -> None:
    data = (root / "ISIC_2.jpg").read_bytes()
    (root / "ISIC_2.jpg").write_bytes(data[: len(data) // 2])


def _corrupt(root: Path) -> None:
    # fixed bytes: random ones sometimes parse as a JPEG header and fail later with another message
    (root / "ISIC_2.jpg").write_bytes(b"\xff\xd8\xff" + random.Random(0).randbytes(200))


def _not_an_image(root: Path) -> None:
    (root / "ISIC_2.jpg").write_text("<html>403 Forbidden</html>")  # a failed download saved as .jpg


def _too_small(root: Path) -> None:
    Image.new("RGB", (8, 8), (9, 9, 9)).save(root / "ISIC_2.jpg")


def _missing_image(root: Path) -> None:
    (root / "ISIC_2.jpg").unlink()


def _not_in_csv(root: Path) -> None:
    Image.new("RGB", (24, 24)).save(root / "ISIC_9.jpg")


def _duplicate_file(root: Path) -> None:
    Image.new("RGB", (24, 24)).save(root / "ISIC_2.png")


def _duplicate_row(root: Path) -> None:
    rows = _rows(root)
    _write_rows(root, [*rows, rows[2]])


def _unknown_diagnosis(root: Path) -> None:
    rows = _rows(root)
    rows[2][1] = "mystery lesion"
    _write_rows(root, rows)


# (mutation, text naming the file in the error, reason fragment, bad id, images left when skipped)
CASES: dict[str, tuple[Callable[[Path], None], str, str, str, int]] = {
    "truncated": (_truncate, "ISIC_2.jpg", "truncated", "ISIC_2", N - 1),
    "corrupt": (_corrupt, "ISIC_2.jpg", "corrupt", "ISIC_2", N - 1),
    "non_image_file": (_not_an_image, "ISIC_2.jpg", "not an image", "ISIC_2", N - 1),
    "too_small": (_too_small, "ISIC_2.jpg", "too small: 8x8", "ISIC_2", N - 1),
    "csv_row_without_image": (_missing_image, "ISIC_2", "CSV row without an image", "ISIC_2", N - 1),
    "image_missing_from_csv": (_not_in_csv, "ISIC_9.jpg", "not listed in any CSV", "ISIC_9", N),
    "duplicate_file": (_duplicate_file, "ISIC_2.png", "duplicate id", "ISIC_2", N - 1),
    "duplicate_csv_row": (_duplicate_row, "metadata.csv", "duplicate id: rows 4 and 8", "ISIC_2", N - 1),
    "unknown_diagnosis": (
        _unknown_diagnosis,
        "metadata.csv",
        "unrecognised diagnosis 'mystery lesion'",
        "ISIC_2",
        N - 1,
    ),
}


def _dm(root: Path, on_bad_image: str) -> LesionDataModule:
    return LesionDataModule(
        str(root), image_size=16, min_image_size=12, on_bad_image=on_bad_image, cache_workers=1
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_errors_by_default_naming_the_file(tmp_path, case):
    mutate, names, reason, _, _ = CASES[case]
    root = _archive(tmp_path / "isic")
    mutate(root)
    dm = _dm(root, "error")
    with pytest.raises(ValueError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert names in msg and reason in msg
    assert "data.on_bad_image=skip" in msg and "bad_images.csv" in msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_skipped_and_reported(tmp_path, case):
    mutate, _, reason, bad_id, left = CASES[case]
    root = _archive(tmp_path / "isic")
    mutate(root)
    dm = _dm(root, "skip")
    with pytest.warns(UserWarning, match="left out"):
        dm.prepare_data()
    dm.setup()
    ids = [i for s in ("train", "val", "test") for i in dm.split_dataset(s).ids]
    assert len(ids) == left and bad_id not in ids
    info = dm.describe()
    with open(info["bad_images_report"], newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["id"] for r in report] == [bad_id] and reason in report[0]["reason"]
    assert info["num_bad_inputs"] == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 16, 16)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    dm = LesionDataModule(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"holds no images.*data=synthetic"):
        dm.prepare_data()


def test_fixing_the_file_clears_the_report(tmp_path):
    root = _archive(tmp_path / "isic")
    _too_small(root)
    dm = _dm(root, "skip")
    with pytest.warns(UserWarning):
        dm.prepare_data()
    assert dm.describe()["bad_images_report"] is not None
    Image.new("RGB", (24, 24)).save(root / "ISIC_2.jpg")
    fixed = _dm(root, "error")
    fixed.prepare_data()
    assert fixed.describe()["num_bad_inputs"] == 0 and fixed.describe()["bad_images_report"] is None


def _save(tmp_path: Path, name: str, img: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_convertible_modes_become_correct_rgb(tmp_path):
    palette = Image.new("P", (20, 20), 3)
    palette.putpalette([0, 0, 0, 1, 2, 3, 4, 5, 6, 10, 20, 30] + [0] * 756)
    cases = {
        "gray.png": (Image.new("L", (20, 20), 100), (100, 100, 100)),
        "bilevel.png": (Image.new("1", (20, 20), 1), (255, 255, 255)),
        "rgba_opaque.png": (Image.new("RGBA", (20, 20), (200, 100, 50, 255)), (200, 100, 50)),
        "rgba_clear.png": (Image.new("RGBA", (20, 20), (200, 100, 50, 0)), (0, 0, 0)),  # over black
        "gray_alpha.png": (Image.new("LA", (20, 20), (100, 255)), (100, 100, 100)),
        "palette.png": (palette, (10, 20, 30)),
        "sixteen_bit.png": (Image.fromarray(np.full((20, 20), 257 * 100, np.uint16)), (100, 100, 100)),
        "cmyk.jpg": (Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
        "cmyk.tif": (Image.new("CMYK", (20, 20), (0, 0, 0, 0)), (255, 255, 255)),
    }
    for name, (img, rgb) in cases.items():
        path = _save(tmp_path, name, img, **({"quality": 100} if name.endswith(".jpg") else {}))
        out = load_rgb(path, 16, "squash", 12)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - np.array(rgb)).max() <= 2, (name, out[8, 8])
    # 16 bits are scaled, not clipped: 65535 -> 255 and 257 * 7 -> 7
    ramp = np.array([[0, 257 * 7, 65535, 65535]] * 20, dtype=np.uint16).repeat(5, axis=1)
    out = load_rgb(_save(tmp_path, "ramp16.png", Image.fromarray(ramp)), 20, "squash", 12)
    assert out[0, 0, 0] == 0 and out[0, 7, 0] == 7 and out[0, 19, 0] == 255


def test_mixed_modes_load_through_the_datamodule(tmp_path):
    root = tmp_path / "isic"
    root.mkdir()
    images = {
        "ISIC_0": Image.new("L", (30, 30), 100),
        "ISIC_1": Image.new("RGBA", (30, 30), (200, 100, 50, 255)),
        "ISIC_2": Image.fromarray(np.full((30, 30), 65535, np.uint16)),
        "ISIC_3": Image.new("CMYK", (30, 30), (0, 0, 0, 0)),
    }
    for name, img in images.items():
        img.save(root / f"{name}.{'jpg' if img.mode == 'CMYK' else 'png'}")
    _write_rows(root, [[n, "nevus", n, n] for n in images])
    dm = LesionDataModule(
        str(root), image_size=16, val_fraction=0.0, test_fraction=0.0, normalization="scale"
    )
    dm.setup()
    ds = dm.split_dataset("train")
    got = {i: ds[k]["image"][:, 8, 8].mul(255).round().tolist() for k, i in enumerate(ds.ids)}
    assert got == {"ISIC_0": [100] * 3, "ISIC_1": [200, 100, 50], "ISIC_2": [255] * 3, "ISIC_3": [255] * 3}


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees: portrait
    path = _save(tmp_path, "rotated.jpg", Image.new("RGB", (40, 20), (250, 250, 250)), exif=exif, quality=100)
    out = load_rgb(path, 16, "pad", 12)
    # portrait 20x40 -> 8x16 centred: black columns left and right, full height used
    assert out[:, :3].max() < 10 and out[:, -3:].max() < 10 and out[:, 8].min() > 200


def test_resize_modes(tmp_path):
    bands = np.zeros((24, 48, 3), np.uint8)
    bands[:, :12] = (0, 255, 0)  # green | red (central 24x24 square) | blue
    bands[:, 12:36] = (255, 0, 0)
    bands[:, 36:] = (0, 0, 255)
    path = _save(tmp_path, "bands.png", Image.fromarray(bands))
    squash = load_rgb(path, 16, "squash", 12)
    assert squash[8, 0].tolist() == [0, 255, 0] and squash[8, 15].tolist() == [0, 0, 255]
    crop = load_rgb(path, 16, "center_crop", 12)
    # only the red square is left (the resampling kernel may blend a trace of the neighbours into the edge)
    assert np.abs(crop[:, 1:-1].astype(int) - [255, 0, 0]).max() <= 3 and crop[..., 1:].max() < 20
    pad = load_rgb(path, 16, "pad", 12)
    assert pad[:4].max() == 0 and pad[-4:].max() == 0 and pad[8, 0].tolist() == [0, 255, 0]
    with pytest.raises(BadImageError, match="too small"):
        load_rgb(path, 16, "squash", 30)
