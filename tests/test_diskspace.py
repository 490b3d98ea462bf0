"""A full disk says so: the cache build, encode, sample and checkpoint writes check free space first, and a
write that fails anyway (ENOSPC, EFBIG, quota) names the path, the bytes and the way out, with no
temporaries left behind.

Watched failing on the code before: the builds ran (or died with a bare `OSError: [Errno 27]`).
"""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from clihelpers import compose_config
from PIL import Image
from torch.utils.data import DataLoader

from lesion_lightning.data import cache as cache_mod

Usage = namedtuple("Usage", "total used free")


def low_disk(monkeypatch, free: int) -> None:
    """Every file system reports `free` bytes free (what `shutil.disk_usage` says on a nearly full disk)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))


def images(tmp_path: Path, n: int = 4) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / "src" / f"img{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(p)
        paths.append(p)
    return paths


def build(tmp_path: Path, size: int = 32):
    paths = images(tmp_path)
    return cache_mod.build_cache(
        tmp_path / "cache", "k", [p.stem for p in paths], paths, size, progress=False, workers=1
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_cache_build_refuses_early_with_path_sizes_and_the_way_out(tmp_path: Path, monkeypatch) -> None:
    low_disk(monkeypatch, free=1000)
    with pytest.raises(OSError, match="data.cache_dir=") as err:
        build(tmp_path)
    text = str(err.value)
    needed = 4 * (32 * 32 * 3 + 32 * 32 * 3 + 512)
    assert str(tmp_path / "cache") in text and f"{needed} bytes" in text and "1000 bytes" in text, text
    assert leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("code", [errno.EFBIG, errno.ENOSPC, errno.EDQUOT])
def test_failed_cache_write_is_reported_and_its_temporaries_removed(
    tmp_path: Path, monkeypatch, code
) -> None:
    real_save = np.save

    def failing_save(file, *args, **kwargs):  # the thumbnails' write, after images.npy is complete
        real_save(file, *args, **kwargs)
        raise OSError(code, "simulated")

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(OSError, match="data.cache_dir=") as err:
        build(tmp_path)
    assert errno.errorcode[code] in str(err.value) and str(tmp_path / "cache") in str(err.value)
    assert "index.json" not in leftovers(tmp_path / "cache"), "nothing that loads"
    assert not [n for n in leftovers(tmp_path / "cache") if ".tmp-" in n], "temporaries removed"


def test_efbig_from_the_memmap_itself_is_reported(tmp_path: Path, monkeypatch) -> None:
    def too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(cache_mod.np.lib.format, "open_memmap", too_large)
    with pytest.raises(OSError, match="not enough disk space for the image cache .*EFBIG.*data.cache_dir="):
        build(tmp_path)


def test_other_os_errors_pass_through_unchanged(tmp_path: Path, monkeypatch) -> None:
    from lesion_lightning.utils.diskspace import DiskSpaceError, reporting_disk_errors

    with pytest.raises(PermissionError) as err, reporting_disk_errors(tmp_path, "x", "y"):
        raise PermissionError(errno.EACCES, "denied")
    assert not isinstance(err.value, DiskSpaceError)


def tiny_trainer(tmp_path: Path, max_steps: int = 2) -> L.Trainer:
    from lesion_lightning.callbacks.checkpointing import FiniteModelCheckpoint

    ckpt = FiniteModelCheckpoint(
        dirpath=tmp_path / "ckpts", every_n_train_steps=1, save_last=True, save_top_k=0
    )
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )


def classifier():
    from lesion_lightning.modules.classifier_module import ClassifierModule

    return ClassifierModule(net={"name": "small_cnn"}, class_names=["a", "b"])


LOADER = DataLoader(
    [{"image": torch.rand(3, 16, 16), "label": torch.tensor(i % 2)} for i in range(8)], batch_size=4
)


def test_checkpoint_write_refuses_early_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    low_disk(monkeypatch, free=10)
    with pytest.raises(OSError, match=r"checkpoint at .*ckpts.*10 bytes\) free.*paths.log_dir="):
        tiny_trainer(tmp_path).fit(classifier(), LOADER)


def test_checkpoint_write_that_fails_with_enospc_is_reported(tmp_path: Path, monkeypatch) -> None:
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(L.Trainer, "save_checkpoint", full)
    with pytest.raises(OSError, match="checkpoint .*ENOSPC.*paths.log_dir="):
        tiny_trainer(tmp_path).fit(classifier(), LOADER)


def test_encode_and_sample_refuse_early_on_a_full_disk(chain, tmp_path: Path, monkeypatch) -> None:
    from lesion_lightning.encode import encode
    from lesion_lightning.samples.folder import sample_to_folder as sample

    cfg = compose_config("encode", [f"vqvae_ckpt={chain['vqvae']}", f"out_dir={tmp_path / 'idx'}"], tmp_path)
    low_disk(monkeypatch, free=100)
    with pytest.raises(OSError, match="index dataset at .*100 bytes\\) free.*out_dir="):
        encode(cfg)
    assert leftovers(tmp_path) == [] or "idx" not in leftovers(tmp_path)
    cfg = compose_config(
        "sample",
        [f"pixelcnn_ckpt={chain['pixelcnn']}", "num_samples=2", f"out_dir={tmp_path / 's'}"],
        tmp_path,
    )
    with pytest.raises(OSError, match="samples at .*100 bytes\\) free.*out_dir="):
        sample(cfg)
    assert not (tmp_path / "s").exists()
