"""LesionDataModule end to end on the synthetic ISIC-layout data: batches, cache, split, config."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lesion_lightning.data import cache as cache_mod
from lesion_lightning.data.cache import load_cache
from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.layouts import Record
from lesion_lightning.data.splits import make_split
from lesion_lightning.data.synthetic import write_synthetic_isic

REPO = Path(__file__).resolve().parents[1]
SYN = {"num_images": 24, "image_size": 32, "seed": 0}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "isic"
    write_synthetic_isic(root, **SYN)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(root, dst, ignore=shutil.ignore_patterns(".lesion_cache"))
    return dst


def _metadata(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "metadata.csv", newline="") as f:
        return {row["isic_id"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("normalization", ["minmax", "scale"])
def test_synthetic_batches_shape_range_and_labels(tmp_path, normalization):
    root = tmp_path / "generated"
    dm = LesionDataModule(
        str(root), image_size=16, batch_size=4, normalization=normalization, synthetic=SYN, augment=None
    )
    dm.prepare_data()  # generates the dataset at root on first use, then caches it
    dm.setup("fit")
    assert (root / "metadata.csv").is_file()
    assert dm.class_names == ["melanoma", "nevus"] and dm.num_classes == 2

    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and batch["index"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2, 3]  # positions within the (unshuffled) split
    images = batch["image"]
    assert images.min() >= 0 and images.max() <= 1
    val = dm.split_dataset("val")
    raw = torch.from_numpy(np.array(np.load(val.images_path, mmap_mode="r")[val.rows[:4]])).permute(
        0, 3, 1, 2
    )
    if normalization == "minmax":  # every image stretched to exactly [0, 1]
        assert torch.allclose(images.amin(dim=(1, 2, 3)), torch.zeros(4))
        assert torch.allclose(images.amax(dim=(1, 2, 3)), torch.ones(4))
    else:
        assert torch.allclose(images, raw.float() / 255)

    # labels agree with the CSV diagnoses
    meta = _metadata(root)
    for i, label in zip(range(4), batch["label"].tolist(), strict=True):
        assert dm.class_names[label] == meta[val.ids[i]]["diagnosis"]

    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (4, 3, 16, 16)
    sizes = dm.describe()["split_sizes"]
    assert sum(sizes.values()) == SYN["num_images"] and min(sizes.values()) > 0


def test_missing_root_names_path_and_how_to_get_data(tmp_path):
    missing = tmp_path / "no_such_isic"
    with pytest.raises(FileNotFoundError) as err:
        LesionDataModule(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "isic image download" in msg and "pip install isic-cli" in msg
    assert "data=synthetic" in msg


def test_synthetic_root_with_other_params_is_refused(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    dm = LesionDataModule(str(root), image_size=16, synthetic={**SYN, "seed": 1})
    with pytest.raises(ValueError, match="delete that folder"):
        dm.prepare_data()


def test_hparams_are_primitives_and_rebuild_the_same_split(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    augment = OmegaConf.create({"_target_": "albumentations.HorizontalFlip", "p": 1.0})
    classes = OmegaConf.create(["melanoma", "nevus"])
    dm = LesionDataModule(str(root), image_size=16, augment=augment, classes=classes)
    assert isinstance(dm.hparams["augment"], dict) and isinstance(dm.hparams["classes"], list)
    dm.prepare_data()
    dm.setup()
    # what the encode stage does: rebuild from the checkpoint's datamodule_hyper_parameters
    again = LesionDataModule(**dict(dm.hparams))
    again.setup()
    for split in ("train", "val", "test"):
        assert again.split_dataset(split).ids == dm.split_dataset(split).ids
    assert again.describe() == dm.describe()
    # train augmentation applies (a horizontal flip with p=1), evaluation data does not
    plain = dm.split_dataset("train")[0]["image"]
    flipped = dm.split_dataset("train", augment=True)[0]["image"]
    assert torch.allclose(flipped, plain.flip(-1))


def test_classes_select_and_merge_keep_each_image_in_its_split(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    meta = _metadata(root)
    full = LesionDataModule(str(root), image_size=16)
    full.setup()
    split_of = {i: s for s in ("train", "val", "test") for i in full.split_dataset(s).ids}

    only = LesionDataModule(str(root), image_size=16, classes=["MEL"])
    only.setup()
    assert only.class_names == ["melanoma"]
    ids = [i for s in ("train", "val", "test") for i in only.split_dataset(s).ids]
    assert sorted(ids) == sorted(i for i, row in meta.items() if row["diagnosis"] == "melanoma")
    for s in ("train", "val", "test"):
        assert all(split_of[i] == s for i in only.split_dataset(s).ids)

    merged = LesionDataModule(str(root), image_size=16, classes={"rest": "*", "mel": ["melanoma"]})
    merged.setup()
    assert merged.class_names == ["rest", "mel"]
    ds = merged.split_dataset("train")
    for i, label in zip(ds.ids, ds.labels, strict=True):
        assert label == (1 if meta[i]["diagnosis"] == "melanoma" else 0)

    with pytest.raises(ValueError, match="data.classes"):
        LesionDataModule(str(root), classes=["melanomma"])


def test_cache_reused_when_unchanged_and_rebuilt_when_size_or_files_change(
    tmp_path, synthetic_root, monkeypatch
):
    root = _copy(synthetic_root, tmp_path)
    calls = []
    real = cache_mod.build_cache

    def counting(*args, **kwargs):
        calls.append(args[4])  # image_size
        return real(*args, **kwargs)

    monkeypatch.setattr("lesion_lightning.data.prepare.build_cache", counting)
    first = LesionDataModule(str(root), image_size=16)
    first.prepare_data()
    second = LesionDataModule(str(root), image_size=16)
    second.prepare_data()
    assert calls == [16]  # reused
    assert second.describe()["cache_key"] == first.describe()["cache_key"]
    arr = np.load(Path(first.describe()["cache_dir"]) / "images.npy", mmap_mode="r")
    assert arr.shape == (SYN["num_images"], 16, 16, 3) and arr.dtype == np.uint8

    bigger = LesionDataModule(str(root), image_size=24)
    bigger.prepare_data()
    assert calls == [16, 24]
    assert np.load(Path(bigger.describe()["cache_dir"]) / "images.npy", mmap_mode="r").shape[1:] == (
        24,
        24,
        3,
    )

    # a source image changes (new mtime/size): rebuilt; the split file is the same one
    img = sorted(root.glob("*.jpg"))[0]
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    changed = LesionDataModule(str(root), image_size=16)
    changed.prepare_data()
    assert calls == [16, 24, 16]
    assert changed.describe()["split_file"] == first.describe()["split_file"]


def test_interrupted_cache_build_leaves_nothing_loadable(tmp_path, synthetic_root, monkeypatch):
    root = _copy(synthetic_root, tmp_path)
    real = cache_mod._decode
    count = {"n": 0}

    def dying(*args, **kwargs):
        count["n"] += 1
        if count["n"] == 10:
            raise KeyboardInterrupt  # like Ctrl-C half-way through
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "_decode", dying)
    dm = LesionDataModule(str(root), image_size=16, cache_workers=1)
    with pytest.raises(KeyboardInterrupt):
        dm.prepare_data()
    entries = [p for p in (root / ".lesion_cache").iterdir() if p.name != "splits"]
    assert len(entries) == 1
    assert not (entries[0] / "index.json").exists() and not (entries[0] / "images.npy").exists()
    assert list(entries[0].iterdir()) == []  # temporary files removed too
    all_ids = sorted(_metadata(root))
    assert load_cache(entries[0], entries[0].name, all_ids) is None
    monkeypatch.setattr(cache_mod, "_decode", real)
    dm = LesionDataModule(str(root), image_size=16)
    dm.prepare_data()  # the next run builds it from scratch
    assert load_cache(entries[0], entries[0].name, all_ids) is not None
    assert len(dm.split_dataset("train")) > 0


def _grouped_records(n_patients: int = 12) -> list[Record]:
    recs = []
    rng = np.random.default_rng(0)
    for p in range(n_patients):
        for lesion in range(int(rng.integers(1, 3))):
            diagnosis = "melanoma" if (p + lesion) % 3 == 0 else "nevus"
            for view in range(int(rng.integers(2, 5))):  # many images per lesion
                recs.append(
                    Record(
                        f"ISIC_{p:02d}{lesion}{view}", Path("x.jpg"), diagnosis, "", f"L{p}_{lesion}", f"P{p}"
                    )
                )
    return recs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_never_separates_a_lesion_or_patient_and_is_deterministic(seed):
    recs = _grouped_records()
    split = make_split(recs, 0.2, 0.2, seed)
    where = {i: s for s, ids in split.items() for i in ids}
    assert sorted(where) == sorted(r.id for r in recs)
    for key in ("lesion_id", "patient_id"):
        groups: dict[str, set[str]] = {}
        for r in recs:
            groups.setdefault(getattr(r, key), set()).add(where[r.id])
        assert all(len(s) == 1 for s in groups.values()), key
    assert all(split[s] for s in ("train", "val", "test"))
    assert make_split(list(reversed(recs)), 0.2, 0.2, seed) == split  # order of reading does not matter
    assert split != make_split(recs, 0.2, 0.2, seed + 10)


def test_split_is_stratified_by_diagnosis():
    recs = [Record(f"m{i:03d}", Path("x"), "melanoma") for i in range(50)]
    recs += [Record(f"n{i:03d}", Path("x"), "nevus") for i in range(200)]
    split = make_split(recs, 0.1, 0.1, 0)
    for s, expected in (("val", (5, 20)), ("test", (5, 20))):
        mel = sum(i.startswith("m") for i in split[s])
        assert (mel, len(split[s]) - mel) == expected


def test_split_file_written_once_and_reused(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    dm = LesionDataModule(str(root), image_size=16, split_seed=3)
    dm.prepare_data()
    path = Path(dm.describe()["split_file"])
    stored = json.loads(path.read_text())
    assert stored["seed"] == 3 and sum(stored["sizes"].values()) == SYN["num_images"]
    # a hand-edited split file is what later stages use (it is read, not recomputed)
    stored["splits"]["val"], stored["splits"]["train"] = stored["splits"]["train"], stored["splits"]["val"]
    path.write_text(json.dumps(stored))
    again = LesionDataModule(str(root), image_size=16, split_seed=3)
    again.setup()
    assert again.split_dataset("val").ids == sorted(stored["splits"]["val"])


def test_configs_compose_and_instantiate(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "data", conf / "data")
    (conf / "main.yaml").write_text(
        f"defaults:\n  - data: synthetic\n  - _self_\npaths:\n  data_dir: {tmp_path}/d\n"
    )
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "main",
            overrides=["data.image_size=16", "data.synthetic.image_size=32", "data.synthetic.num_images=12"],
        )
        isic = compose("main", overrides=["data=isic"])
    assert cfg.data.root == f"{tmp_path}/d/synthetic/n12_px32_seed0"
    assert isic.data.root == f"{tmp_path}/d/isic" and isic.data.synthetic is None
    one_of = cfg.data.augment.transforms[0]
    assert one_of._target_ == "albumentations.OneOf" and len(one_of.transforms) == 4
    dm = instantiate(cfg.data)
    assert isinstance(dm, LesionDataModule)
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 16, 16)
