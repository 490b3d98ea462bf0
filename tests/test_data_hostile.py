"""Issue 15: hostile folders and interrupted runs. Each case gives a clear error naming the file (or a
reported skip), never a bare traceback or a silently wrong dataset."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clihelpers import compose_config
from omegaconf import OmegaConf
from PIL import Image

from lesion_lightning.data.datamodule import LesionDataModule
from lesion_lightning.data.stale import remove_stale_temporaries

N = 6


def _folder(root: Path, n: int = N) -> Path:
    """A plain folder of n distinct 24 px JPEGs (the `folder` layout)."""
    root.mkdir(parents=True)
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"img_{i:02d}.jpg")
    return root


def _dm(root: Path, on_bad_image: str = "error", **kw) -> LesionDataModule:
    kw = {"val_fraction": 0.2, "test_fraction": 0.2, **kw}
    return LesionDataModule(str(root), image_size=16, min_image_size=12, on_bad_image=on_bad_image, **kw)


def _all_ids(dm: LesionDataModule) -> dict[str, list[str]]:
    return {s: dm.split_dataset(s).ids for s in ("train", "val", "test")}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(("target", "reason"), [("nope.jpg", "broken symbolic link"), ("x.jpg", "loop")])
def test_dangling_and_self_links_are_reported(tmp_path, target, reason):
    root = _folder(tmp_path / "d")
    os.symlink(target, root / "x.jpg")
    with pytest.raises(ValueError, match=rf"x\.jpg.*{reason}"):
        _dm(root).prepare_data()
    dm = _dm(root, "skip")
    with pytest.warns(UserWarning, match="left out 1"):
        dm.prepare_data()
    with open(dm.describe()["bad_images_report"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["x.jpg"] and reason in rows[0]["reason"]
    assert sum(map(len, _all_ids(dm).values())) == N


def test_directory_link_loop_is_walked_once_and_aliases_are_one_image(tmp_path):
    root = _folder(tmp_path / "d", 12)
    os.symlink(".", root / "again")
    os.symlink("img_00.jpg", root / "same_as_00.jpg")
    dm = _dm(root)
    with pytest.warns(UserWarning, match="again"):
        dm.prepare_data()
    ids = _all_ids(dm)
    every = [i for v in ids.values() for i in v]
    assert sorted(every) == [f"img_{i:02d}.jpg" for i in range(12)]
    assert not set(ids["train"]) & set(ids["test"])


def test_file_name_that_is_not_utf8_loads(tmp_path):
    root = _folder(tmp_path / "d")
    raw = os.fsencode(root) + b"/caf\xe9.jpg"
    Image.new("RGB", (24, 24), (200, 10, 10)).save(os.fsdecode(raw))
    for mode in ("error", "skip"):
        dm = _dm(root, mode, val_fraction=0.0, test_fraction=0.0)
        dm.prepare_data()
        assert "caf\\xe9.jpg" in dm.split_dataset("train").ids
        json.dumps(dm.describe()).encode("utf-8")  # manifests stay valid UTF-8
    # a bad image under such a name is reported, and the report is written
    with open(os.fsdecode(raw), "wb") as f:
        f.write(b"not a jpeg")
    dm = _dm(root, "skip")
    with pytest.warns(UserWarning, match="left out 1"):
        dm.prepare_data()
    report = Path(dm.describe()["bad_images_report"]).read_text(encoding="utf-8")
    assert "caf\\xe9.jpg" in report


def test_logger_none_trains(tmp_path):
    from lesion_lightning.train import train

    cfg = compose_config(
        "train",
        [
            "experiment=quickstart",
            "logger=none",
            "data.image_size=32",
            "data.synthetic.num_images=12",
            "data.batch_size=4",
            "model.net.num_downsamples=1",
            "model.net.hidden_channels=8",
            "model.net.res_channels=4",
            "trainer.max_steps=1",
            "++trainer.limit_val_batches=1",
            "test=false",
            "callbacks.rich_progress_bar=null",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        tmp_path / "run",
    )
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 1 and not objects["trainer"].loggers


def _archive(root: Path) -> Path:
    _folder(root)
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerow(["isic_id", "diagnosis"])
    return root


def test_metadata_with_header_and_no_rows_names_the_csv(tmp_path):
    root = _archive(tmp_path / "d")
    with pytest.raises(ValueError, match="metadata.csv: header but no rows") as err:
        _dm(root).prepare_data()
    assert "bad_images.csv" not in str(err.value) and "data.layout=folder" in str(err.value)


def test_empty_metadata_is_an_error_unless_folder_layout_is_forced(tmp_path):
    root = _archive(tmp_path / "d")
    (root / "metadata.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"metadata.csv is empty.*data.layout=folder"):
        _dm(root).prepare_data()
    dm = _dm(root, layout="folder")
    with pytest.warns(UserWarning, match="ignored CSV"):
        dm.prepare_data()
    assert sum(map(len, _all_ids(dm).values())) == N


_KILLED_PIPELINE = """
import sys
from pathlib import Path
from omegaconf import OmegaConf
import lesion_lightning.pipeline as P
P.HEARTBEAT_S = 0.05
cfg = OmegaConf.create({"grid": 8, "image_size": 32, "group": "g", "stages": ["vqvae"]})
p = P.Pipeline(cfg, Path(sys.argv[1]))
p.command = lambda stage: [sys.executable, "-c", "import time; time.sleep(60)"]
p.run()
"""


def test_stage_time_survives_a_kill(tmp_path, monkeypatch):
    import lesion_lightning.pipeline as P

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PIPELINE, str(tmp_path)], env=env, start_new_session=True
    )
    state_path, seconds, deadline = tmp_path / "pipeline.json", 0.0, time.monotonic() + 60
    try:
        while seconds < 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                seconds = json.loads(state_path.read_text())["stages"]["vqvae"].get("seconds", 0.0)
            except (OSError, ValueError, KeyError):
                pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9: the pipeline and its stage
        proc.wait()
    assert seconds >= 1.0
    killed = json.loads(state_path.read_text())["stages"]["vqvae"]
    assert killed["status"] == "running"

    cfg = OmegaConf.create({"grid": 8, "image_size": 32, "group": "g", "stages": ["vqvae"]})
    pipeline = P.Pipeline(cfg, tmp_path)
    monkeypatch.setattr(pipeline, "command", lambda stage: [sys.executable, "-c", "pass"])
    state = pipeline.run()
    assert state["stages"]["vqvae"]["status"] == "done"
    assert state["stages"]["vqvae"]["seconds"] >= killed["seconds"]


def test_stale_cache_temporaries_are_removed(tmp_path):
    root = _folder(tmp_path / "d")
    dm = _dm(root)
    dm.prepare_data()
    entry = Path(dm.describe()["cache_dir"])
    host, dead = socket.gethostname(), _dead_pid()
    stale = [entry / f"images.npy.tmp-{host}-{dead}.npy", entry / f"index.json.tmp-{host}-{dead}"]
    kept = [
        entry / f"images.npy.tmp-{host}-{os.getpid()}.npy",  # a live process's
        entry / f"images.npy.tmp-other-host-{dead}.npy",  # another machine's (shared file system)
    ]
    for p in stale + kept:
        p.write_bytes(b"x")
    with pytest.warns(UserWarning, match="removed 2 temporary"):
        _dm(root).prepare_data()
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_stale_encode_folder_is_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".indices.tmp-{dead}"
    (stale / "sub").mkdir(parents=True)
    live = tmp_path / f".indices.tmp-{os.getpid()}"
    live.mkdir()
    other = tmp_path / f".samples.tmp-{dead}"  # another output's: not encode's to remove
    other.mkdir()
    removed = remove_stale_temporaries(tmp_path, prefix=".indices.tmp-")
    assert len(removed) == 1 and not stale.exists() and live.exists() and other.exists()


def test_damaged_index_dataset_and_split_file_are_named(tmp_path):
    from lesion_lightning.data.indices import IndexDataset, IndexManifest

    (tmp_path / "manifest.json").write_text('{"grid_size": [2, 2], ')  # cut off mid-write by hand
    with pytest.raises(ValueError, match=r"manifest.json is not readable JSON.*re-run encode"):
        IndexManifest.read(tmp_path)
    np.save(tmp_path / "train_labels.npy", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"`train` split cannot be read.*re-run encode"):
        IndexDataset(tmp_path, "train")

    root = _folder(tmp_path / "d")
    dm = _dm(root)
    dm.prepare_data()
    split_file = Path(dm.describe()["split_file"])
    split_file.write_text("{")
    with pytest.raises(ValueError, match=r"split file .* is damaged.*delete it"):
        _dm(root).prepare_data()
