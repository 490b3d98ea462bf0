"""Every supported on-disk layout, as tiny real files with the real CSV column names, is detected and
read with the right labels and groups; data.layout forces a layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.layouts import detect_layout, read_layout
from lesion_lightning.data.vocabulary import map_flat, map_hierarchical, resolve_classes


def _img(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _labels(root: Path, layout: str = "auto") -> dict[str, str]:
    result = read_layout(root, layout)
    assert result.bad == [], result.bad
    return {r.id: r.diagnosis for r in result.records}


def test_isic_archive_hierarchical_diagnosis(tmp_path):
    rows = [
        ["ISIC_0000001", "Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive", "", "", "IL_1", "IP_1"],
        ["ISIC_0000002", "Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, Atypical, Dysplastic, or Clark", "", "IL_2", "IP_1"],
        ["ISIC_0000003", "Malignant", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma", "Basal cell carcinoma, Superficial", "", "IL_3", "IP_2"],
        ["ISIC_0000004", "Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis", "", "", "", ""],
        ["ISIC_0000005", "Benign", "Benign epidermal proliferations", "Seborrheic keratosis", "", "", "", ""],
        ["ISIC_0000006", "Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma, Invasive", "", "", "", ""],
        ["ISIC_0000007", "Benign", "Benign soft tissue proliferations - Vascular", "Hemangioma", "", "", "", ""],
        ["ISIC_0000008", "Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma", "", "", "", ""],
        ["ISIC_0000009", "Benign", "Cysts", "", "", "", "", ""],  # a real ISIC diagnosis outside the classes
        ["ISIC_0000010", "", "", "", "", "", "", ""],  # unlabelled archive image
    ]  # fmt: skip
    header = [
        "isic_id",
        "diagnosis_1",
        "diagnosis_2",
        "diagnosis_3",
        "diagnosis_4",
        "diagnosis_5",
        "lesion_id",
        "patient_id",
    ]
    _csv(tmp_path / "metadata.csv", header, rows)
    for i, row in enumerate(rows):
        _img(tmp_path / f"{row[0]}.jpg", seed=i)
    (tmp_path / "attribution.txt").write_text("CC-BY")  # isic-cli writes this; not an image
    assert detect_layout(tmp_path) == "isic_archive"
    result = read_layout(tmp_path)
    assert result.bad == []
    labels = {r.id: r.diagnosis for r in result.records}
    assert [labels[r[0]] for r in rows] == [
        "melanoma", "nevus", "bcc", "actinic_keratosis", "benign_keratosis", "scc", "vascular", "dermatofibroma",
        "unknown", "unknown",
    ]  # fmt: skip
    rec = {r.id: r for r in result.records}["ISIC_0000002"]
    assert (rec.lesion_id, rec.patient_id) == ("IL_2", "IP_1")


def test_isic_archive_flat_diagnosis(tmp_path):
    rows = [
        ["ISIC_1", "melanoma", "malignant"],
        ["ISIC_2", "nevus", "benign"],
        ["ISIC_3", "pigmented benign keratosis", "benign"],
    ]
    _csv(tmp_path / "metadata.csv", ["isic_id", "diagnosis", "benign_malignant"], rows)
    for r in rows:
        _img(tmp_path / f"{r[0]}.JPG")
    assert _labels(tmp_path) == {"ISIC_1": "melanoma", "ISIC_2": "nevus", "ISIC_3": "benign_keratosis"}


def test_ham10000_two_part_form(tmp_path):
    rows = [
        ["HAM_0000118", "ISIC_0027419", "bkl", "histo", 80, "male", "scalp"],
        ["HAM_0000118", "ISIC_0025030", "bkl", "histo", 80, "male", "scalp"],
        ["HAM_0002730", "ISIC_0026769", "mel", "histo", 80, "male", "scalp"],
        ["HAM_0001466", "ISIC_0031633", "nv", "follow_up", 75, "male", "ear"],
        ["HAM_0001467", "ISIC_0031634", "akiec", "histo", 75, "male", "ear"],
        ["HAM_0001468", "ISIC_0031635", "df", "histo", 75, "male", "ear"],
        ["HAM_0001469", "ISIC_0031636", "vasc", "histo", 75, "male", "ear"],
        ["HAM_0001470", "ISIC_0031637", "bcc", "histo", 75, "male", "ear"],
    ]
    _csv(
        tmp_path / "HAM10000_metadata.csv",
        ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
        rows,
    )
    for i, r in enumerate(rows):
        _img(tmp_path / f"HAM10000_images_part_{1 + i % 2}" / f"{r[1]}.jpg", seed=i)
    assert detect_layout(tmp_path) == "isic2018"
    result = read_layout(tmp_path)
    assert result.bad == []
    by_id = {r.id: r for r in result.records}
    assert [by_id[r[1]].diagnosis for r in rows] == [
        "benign_keratosis", "benign_keratosis", "melanoma", "nevus", "actinic_keratosis", "dermatofibroma",
        "vascular", "bcc",
    ]  # fmt: skip
    assert by_id["ISIC_0027419"].lesion_id == by_id["ISIC_0025030"].lesion_id == "HAM_0000118"


def test_isic2018_challenge_folders(tmp_path):
    onehot = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    rows = [
        ["ISIC_0024306", 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ["ISIC_0024307", 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ["ISIC_0024308", 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ]
    _csv(
        tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        onehot,
        rows,
    )
    _csv(
        tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv",
        ["image", "lesion_id", "diagnosis_confirm_type"],
        [
            ["ISIC_0024306", "HAM_0000001", "histopathology"],
            ["ISIC_0024307", "HAM_0000001", "histopathology"],
        ],
    )
    for i, r in enumerate(rows):
        _img(tmp_path / "ISIC2018_Task3_Training_Input" / f"{r[0]}.jpg", seed=i)
    _img(tmp_path / "ISIC2018_Task3_Test_Input" / "ISIC_0034524.jpg")  # no labels: ignored, with a note
    result = read_layout(tmp_path)
    assert result.layout == "isic2018" and result.bad == []
    by_id = {r.id: r for r in result.records}
    assert {k: v.diagnosis for k, v in by_id.items()} == {
        "ISIC_0024306": "nevus",
        "ISIC_0024307": "melanoma",
        "ISIC_0024308": "actinic_keratosis",
    }
    assert by_id["ISIC_0024306"].lesion_id == "HAM_0000001"
    assert any("ISIC2018_Task3_Test_Input" in note for note in result.notes)


def test_isic2019(tmp_path):
    header = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = [
        ["ISIC_0000000", 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ["ISIC_0000002", 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ["ISIC_0000003", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        ["ISIC_0000004", 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    _csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", header, rows)
    _csv(
        tmp_path / "ISIC_2019_Training_Metadata.csv",
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
        [
            ["ISIC_0000000", 55, "anterior torso", "BCN_0000001", "female"],
            ["ISIC_0000002", 30, "", "BCN_0000001", "male"],
        ],
    )
    for i, r in enumerate(rows):
        _img(tmp_path / "ISIC_2019_Training_Input" / f"{r[0]}.jpg", seed=i)
    result = read_layout(tmp_path)
    assert result.layout == "isic2019" and result.bad == []
    by_id = {r.id: r for r in result.records}
    assert [by_id[r[0]].diagnosis for r in rows] == ["nevus", "melanoma", "scc", "actinic_keratosis"]
    assert by_id["ISIC_0000002"].lesion_id == "BCN_0000001"


def test_isic2020_train_folder_and_v2_groundtruth(tmp_path):
    header = ["image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
              "diagnosis", "benign_malignant", "target"]  # fmt: skip
    rows = [
        ["ISIC_2637011", "IP_7279968", "IL_7972535", "male", 45, "head/neck", "unknown", "benign", 0],
        ["ISIC_0015719", "IP_3075186", "IL_4649854", "female", 45, "upper extremity", "nevus", "benign", 0],
        [
            "ISIC_0052212",
            "IP_2842074",
            "IL_9087444",
            "female",
            50,
            "lower extremity",
            "melanoma",
            "malignant",
            1,
        ],
        ["ISIC_0068279", "IP_6890425", "IL_0000001", "female", 45, "head/neck", "lentigo NOS", "benign", 0],
    ]
    _csv(tmp_path / "ISIC_2020_Training_GroundTruth_v2.csv", header, rows)
    for i, r in enumerate(rows):
        _img(tmp_path / "train" / f"{r[0]}.jpg", seed=i)
    _csv(
        tmp_path / "test.csv",
        ["image_name", "patient_id", "sex", "age_approx"],
        [["ISIC_0052060", "IP_3579794", "male", 70]],
    )
    _img(tmp_path / "test" / "ISIC_0052060.jpg")
    # the Kaggle download also ships sample_submission.csv: test images with a `target` column only
    _csv(tmp_path / "sample_submission.csv", ["image_name", "target"], [["ISIC_0052060", 0]])
    result = read_layout(tmp_path)
    assert result.layout == "isic2020" and result.bad == []
    by_id = {r.id: r for r in result.records}
    assert [by_id[r[0]].diagnosis for r in rows] == ["unknown", "nevus", "melanoma", "benign_keratosis"]
    assert by_id["ISIC_0052212"].patient_id == "IP_2842074"
    assert "ISIC_0052060" not in by_id


def test_plain_folder_is_unlabelled_and_recursive(tmp_path):
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "sub" / "a.png")  # same stem in another folder: a different image
    _img(tmp_path / "sub" / "deeper" / "b.jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    result = read_layout(tmp_path)
    assert result.layout == "folder"
    assert {r.id: r.diagnosis for r in result.records} == {
        "a.jpg": "unknown",
        "sub/a.png": "unknown",
        "sub/deeper/b.jpeg": "unknown",
    }
    dm = LesionDataModule(str(tmp_path), image_size=16, val_fraction=0.0, test_fraction=0.0)
    dm.setup()
    assert dm.class_names == ["unknown"] and len(dm.split_dataset("train")) == 3


def test_forced_layout_and_missing_csv(tmp_path):
    _csv(tmp_path / "metadata.csv", ["isic_id", "diagnosis"], [["ISIC_1", "nevus"]])
    _img(tmp_path / "ISIC_1.jpg")
    assert {r.id for r in read_layout(tmp_path, "folder").records} == {"ISIC_1.jpg"}
    with pytest.raises(FileNotFoundError, match="isic2019"):
        read_layout(tmp_path, "isic2019")
    with pytest.raises(ValueError, match="data.layout"):
        LesionDataModule(str(tmp_path), layout="ham")


def test_datamodule_loads_a_challenge_layout_with_labels(tmp_path):
    header = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = [[f"ISIC_{i:07d}"] + [float(j == i % 2) for j in range(9)] for i in range(10)]
    _csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", header, rows)
    for i, r in enumerate(rows):
        _img(tmp_path / "ISIC_2019_Training_Input" / f"{r[0]}.jpg", seed=i)
    dm = LesionDataModule(str(tmp_path), image_size=16, batch_size=2)
    dm.setup()
    assert dm.class_names == ["melanoma", "nevus"]
    for split in ("train", "val", "test"):
        ds = dm.split_dataset(split)
        for i, label in zip(ds.ids, ds.labels, strict=True):
            assert label == int(i[-1]) % 2  # MEL for even ids, NV for odd
    assert dm.describe()["layout"] == "isic2019"


def test_vocabulary_mapping_and_class_resolution():
    assert map_flat("MEL") == map_flat("Melanoma") == "melanoma"
    assert map_flat("") == "unknown" and map_flat("mystery lesion") is None
    assert map_hierarchical(["Benign", "Benign melanocytic proliferations", "", "", ""]) == "nevus"
    assert map_hierarchical(["Benign", "Something new", "Brand new thing", "", ""]) == "unknown"
    assert map_hierarchical(["Bogus", "", "", "", ""]) is None
    assert resolve_classes(None, {"nevus", "melanoma"}) == (
        ["melanoma", "nevus"],
        {"melanoma": 0, "nevus": 1},
    )
    names, mapping = resolve_classes({"melanoma": "MEL", "rest": "*"}, {"nevus"})
    assert names == ["melanoma", "rest"] and mapping["melanoma"] == 0 and mapping["scc"] == 1
    with pytest.raises(ValueError, match="two merged classes"):
        resolve_classes({"a": ["nevus"], "b": ["NV"]}, set())
