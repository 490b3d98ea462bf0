"""Issue 13: exact and near copies (same pixels under another name or format, re-encodes, a 2 % crop, a
resize) join one split group and never cross splits; distinct lesions are not merged; the split a
VQ-VAE was trained on is pinned, and encode/evaluate refuse data that no longer matches it."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelpers import compose_config
from PIL import Image

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.duplicates import descriptors, near_pairs
from lesion_lightning.data.splits import SplitChangedError, pinned_split
from lesion_lightning.data.synthetic import write_synthetic_isic
from lesion_lightning.modules.checkpoints import VQVAECheckpoint

N_LESIONS = 16
# copy name -> (original, how it was made, expected kind)
COPIES = {
    "ISIC_9000000": ("ISIC_0", "png of the decoded pixels", "exact"),
    "ISIC_9000001": ("ISIC_1", "byte copy", "exact"),
    "ISIC_9000002": ("ISIC_2", "jpeg quality 60", "near"),
    "ISIC_9000003": ("ISIC_3", "2 % crop", "near"),
    "ISIC_9000004": ("ISIC_4", "resized to 80 %", "near"),
}


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    """Synthetic lesions at 64 px, one image per lesion (the first view of each)."""
    src = tmp_path_factory.mktemp("dups") / "syn"
    write_synthetic_isic(src, 40, image_size=64, seed=3)
    with open(src / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    firsts = {}
    for row in rows:
        firsts.setdefault(row["lesion_id"], row)
    assert len(firsts) >= N_LESIONS
    out = src.parent / "lesions"
    out.mkdir()
    for k, row in enumerate(list(firsts.values())[:N_LESIONS]):
        shutil.copy(src / f"{row['isic_id']}.jpg", out / f"ISIC_{k}.jpg")
    return out


def _dataset(lesions: Path, root: Path) -> Path:
    """The distinct lesions plus the COPIES, each under its own lesion and patient id."""
    shutil.copytree(lesions, root)
    for name, (orig, how, _) in COPIES.items():
        src = root / f"{orig}.jpg"
        with Image.open(src) as im:
            img = im.convert("RGB")
        w, h = img.size
        if how.startswith("png"):
            img.save(root / f"{name}.png")
        elif how == "byte copy":
            shutil.copy(src, root / f"{name}.jpg")
        elif how.startswith("jpeg"):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=60)
            (root / f"{name}.jpg").write_bytes(buf.getvalue())
        elif how.endswith("crop"):
            c = round(0.02 * w)
            img.crop((c, c, w - c, h - c)).save(root / f"{name}.jpg", quality=95)
        else:
            img.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.BILINEAR).save(root / f"{name}.jpg")
    ids = sorted(p.stem for p in root.iterdir())
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["isic_id", "diagnosis", "lesion_id", "patient_id"])
        for k, i in enumerate(ids):
            w.writerow([i, "melanoma" if k % 2 else "nevus", f"IL_{i}", f"IP_{i}"])
    return root


def _dm(root: Path, **kw) -> LesionDataModule:
    kw = {"val_fraction": 0.25, "test_fraction": 0.25, "image_size": 32, **kw}
    dm = LesionDataModule(str(root), cache_workers=1, **kw)
    dm.prepare_data()
    return dm


def _split_of(dm: LesionDataModule) -> dict[str, str]:
    return {i: s for s in ("train", "val", "test") for i in dm.split_dataset(s).ids}


def test_copies_never_cross_splits_and_distinct_lesions_stay_apart(lesions, tmp_path):
    root = _dataset(lesions, tmp_path / "data")
    would_cross = 0
    for seed in range(4):
        dm = _dm(root, split_seed=seed)
        where = _split_of(dm)
        for name, (orig, _, _) in COPIES.items():
            assert where[name] == where[orig], (seed, name, orig)
        summary = dm.describe()["duplicates"]
        assert summary["crossing_splits"] == 0
        would_cross += summary["would_cross_without_grouping"]
    assert would_cross > 0, "the seeds tried never put a copy apart: this test could not fail"

    with open(summary["report"], newline="") as f:
        rows = list(csv.DictReader(f))
    groups: dict[str, dict[str, str]] = {}
    for row in rows:
        groups.setdefault(row["group"], {})[row["id"]] = row["kind"]
    assert len(groups) == len(COPIES)  # one group per original: no two distinct lesions merged
    for name, (orig, how, kind) in COPIES.items():
        assert groups_of(groups, name) == {orig: "first", name: kind}, how
    assert Path(summary["picture"]).is_file()


def groups_of(groups: dict[str, dict[str, str]], member: str) -> dict[str, str]:
    return next(g for g in groups.values() if member in g)


def test_drop_keeps_one_image_per_group_and_keep_only_reports(lesions, tmp_path):
    root = _dataset(lesions, tmp_path / "data")
    dropped = _dm(root, duplicates="drop")
    ids = set(_split_of(dropped))
    assert not ids & set(COPIES) and len(ids) == N_LESIONS
    assert dropped.describe()["duplicates"]["dropped"] == len(COPIES)
    kept = _dm(root, duplicates="keep")
    assert len(_split_of(kept)) == N_LESIONS + len(COPIES)
    assert kept.describe()["duplicates"]["groups"] == len(COPIES)


def test_threshold_null_finds_exact_copies_only(lesions, tmp_path):
    root = _dataset(lesions, tmp_path / "data")
    summary = _dm(root, near_duplicate_threshold=None).describe()["duplicates"]
    assert summary["groups"] == 2 and summary["exact_copies"] == 2 and summary["near_copies"] == 0


def test_near_pairs_index_matches_brute_force():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (300, 4, 4, 3), dtype=np.uint8)
    thumbs = np.stack(
        [np.asarray(Image.fromarray(c).resize((32, 32), Image.Resampling.BICUBIC)) for c in coarse]
    )
    thumbs[1::7] = np.clip(thumbs[0:-1:7].astype(int) + rng.integers(-6, 7, thumbs[0:-1:7].shape), 0, 255)
    threshold = 0.05
    found = near_pairs(thumbs, threshold)
    base = descriptors(thumbs)
    from lesion_lightning.data.duplicates import _ALIGNMENTS

    best = np.full((len(thumbs), len(thumbs)), 2.0)
    for alignment in _ALIGNMENTS:
        best = np.minimum(best, 1 - descriptors(thumbs, alignment) @ base.T)
    best = np.minimum(best, best.T)
    expected = {(i, j) for i, j in zip(*np.nonzero(best <= threshold), strict=True) if i < j}
    assert set(found) == expected and len(expected) >= 40


def test_missing_lesion_groupings_are_flagged(tmp_path):
    root = tmp_path / "isic2019"
    root.mkdir()
    header = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    with open(root / "ISIC_2019_Training_GroundTruth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(root / f"ISIC_{i}.jpg")
            w.writerow([f"ISIC_{i}", 1, 0, 0, 0, 0, 0, 0, 0, 0])
    with pytest.warns(UserWarning, match=r"no lesion_id.*ISIC_2019_Training_Metadata.csv"):
        LesionDataModule(str(root), image_size=16).prepare_data()


# ------------------------------------------------------------------------------------------- pinned split
@pytest.fixture
def moved_copy(chain, tmp_path) -> tuple[Path, Path]:
    """A copy of the chain's training data (same ids), and a checkpoint path trained on the original."""
    hp = torch.load(chain["vqvae"], map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    copy = tmp_path / "data"
    shutil.copytree(hp["root"], copy, ignore=shutil.ignore_patterns(".lesion_cache"))
    return copy, chain["vqvae"]


def _add_image(root: Path) -> None:
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    new = dict(rows[0], isic_id="ISIC_9999999", lesion_id="IL_new", patient_id="IP_new")
    shutil.copy(root / f"{rows[0]['isic_id']}.jpg", root / "ISIC_9999999.jpg")
    with open(root / "metadata.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerow(new)


def test_checkpoint_and_manifest_pin_the_split(chain):
    pin = VQVAECheckpoint(chain["vqvae"]).pinned_split
    assert pin and Path(pin["split_file"]).is_file()
    assert pinned_split(chain["indices"]) == pin


def test_encode_and_evaluate_refuse_a_changed_split(moved_copy, tmp_path):
    from lesion_lightning.encode import encode
    from lesion_lightning.evaluate import evaluate

    copy, ckpt = moved_copy
    data = [f"data.root={copy}", f"data.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config("encode", [f"vqvae_ckpt={ckpt}", *data], tmp_path / "encode")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "encode" / f".indices.tmp-{dead.pid}"  # left by a killed encode
    stale.mkdir(parents=True)
    encode(cfg)  # same images: the pinned split loads
    assert not stale.exists()
    _add_image(copy)
    cfg = compose_config("encode", [f"vqvae_ckpt={ckpt}", *data, "overwrite=true"], tmp_path / "encode")
    with pytest.raises(
        SplitChangedError, match=r"1 image\(s\) moved \(1 added, 0 missing.*on_split_change=reuse"
    ):
        encode(cfg)
    ev = compose_config("evaluate", [f"vqvae_ckpt={ckpt}", *(f"+{d}" for d in data)], tmp_path / "evaluate")
    with pytest.raises(SplitChangedError, match=r"1 image\(s\) moved"):
        evaluate(ev)
    cfg = compose_config(
        "encode",
        [f"vqvae_ckpt={ckpt}", *data, "data.on_split_change=reuse", "overwrite=true"],
        tmp_path / "encode",
    )
    with pytest.warns(UserWarning, match="1 image"):
        out = encode(cfg)
    assert pinned_split(out) == VQVAECheckpoint(ckpt).pinned_split
