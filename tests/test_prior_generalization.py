"""A prior that generalizes: dihedral train views in encode, the train probe's gap, the EMA of weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clihelpers import CONF
from omegaconf import OmegaConf

from lesion_lightning.data.indices import IndexDataModule, IndexDataset, IndexManifest
from lesion_lightning.data.views import VIEW_NAMES, apply_view, augment_has_orientation, resolve_train_views
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.modules.ema import EMA, warmed_ema_decay
from lesion_lightning.modules.pixelcnn_module import PixelCNNModule


# ------------------------------------------------------------------------------------------- views
def _view_of(x: torch.Tensor, candidates: range) -> int | None:
    return next((v for v in candidates if torch.equal(apply_view(torch.arange(16.0).view(4, 4), v), x)), None)


def test_views_are_the_eight_dihedral_transforms_and_the_prefixes_are_groups() -> None:
    base = torch.arange(16.0).view(4, 4)  # all values distinct: a view is identified by its output
    outs = [apply_view(base, v) for v in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert torch.equal(outs[0], base) and torch.equal(outs[4], torch.rot90(base, 1))
    for k in (1, 2, 4, 8):  # the first K views are closed under composition
        for a in range(k):
            for b in range(k):
                composed = apply_view(apply_view(base, a), b)
                assert _view_of(composed, range(k)) is not None, (
                    f"{VIEW_NAMES[a]} then {VIEW_NAMES[b]} leaves K={k}"
                )
    with pytest.raises(ValueError, match="square"):
        apply_view(torch.zeros(3, 4, 5), 4)


def test_train_views_default_follows_the_augmentation() -> None:
    report = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "augment" / "report.yaml"))
    assert augment_has_orientation(report)
    assert resolve_train_views(None, report) == 8
    assert resolve_train_views("auto", None) == 1  # data.augment=null: orientation may mean something
    jitter_only = {"_target_": "albumentations.ColorJitter"}
    assert resolve_train_views(None, jitter_only) == 1
    assert resolve_train_views(4, None) == 4
    for bad in (0, 9, 2.5, True, "eight"):
        with pytest.raises(ValueError, match="encode.train_views"):
            resolve_train_views(bad, report)


@pytest.mark.slow
def test_encode_writes_every_view_of_every_train_image(chain) -> None:
    """The chain's encode ran with the default: 8 views (the quickstart's data.augment flips and rotates)."""
    manifest = IndexManifest.read(chain["indices"])
    n = manifest.images["train"]
    assert manifest.train_views == VIEW_NAMES
    assert manifest.splits["train"] == 8 * n
    assert manifest.splits["val"] == manifest.images["val"]  # val/test: one un-augmented grid each
    train = IndexDataset(chain["indices"], "train")
    assert (train.num_views, train.num_images) == (8, n)
    assert train.views.tolist() == [v for v in range(8) for _ in range(n)]
    assert np.array_equal(train.labels, np.tile(train.labels[:n], 8))
    assert not (chain["indices"] / "val_views.npy").exists()

    ckpt = VQVAECheckpoint(chain["vqvae"])
    vqvae = ckpt.load_module("cpu").net
    images = torch.stack([ckpt.build_datamodule().split_dataset("train")[i]["image"] for i in range(n)])
    grids = torch.from_numpy(train.indices.astype(np.int64))
    with torch.no_grad():
        for v in range(8):
            rows = grids[v * n : (v + 1) * n]
            # the stored codes are the codes of the transformed image ...
            assert torch.equal(rows, vqvae.encode(apply_view(images, v))), VIEW_NAMES[v]
            # ... so their decodes are the transformed images' reconstructions
            torch.testing.assert_close(
                vqvae.decode_indices(rows), vqvae.decode_indices(vqvae.encode(apply_view(images, v)))
            )
    # the trap: transforming the un-augmented grid gives other codes (the encoder is not equivariant)
    transformed_grids = [apply_view(grids[:n], v) for v in range(1, 8)]
    assert any(
        not torch.equal(t, grids[v * n : (v + 1) * n]) for v, t in enumerate(transformed_grids, start=1)
    )


# -------------------------------------------------------------------------- fake index dataset + module
def fake_views_dataset(
    root: Path, grid: int = 4, num_codes: int = 8, images: int = 6, views: int = 2
) -> Path:
    """An encode output with `views` train views per image (random grids; view-major rows)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"train": images * views, "val": 4, "test": 4}
    for split, n in sizes.items():
        np.save(root / f"{split}_indices.npy", rng.integers(0, num_codes, (n, grid, grid)).astype(np.uint16))
        labels = rng.integers(0, 2, n if split != "train" else images).astype(np.int64)
        np.save(root / f"{split}_labels.npy", np.tile(labels, views) if split == "train" else labels)
    np.save(root / "train_views.npy", np.repeat(np.arange(views, dtype=np.uint8), images))
    manifest = {
        "grid_size": [grid, grid],
        "num_codes": num_codes,
        "splits": sizes,
        "images": {"train": images, "val": 4, "test": 4},
        "views": {"train": list(VIEW_NAMES[:views])},
        "class_names": ["melanoma", "nevus"],
        "vqvae": {"checkpoint": str(root / "missing.ckpt"), "fingerprint": "0" * 64},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_prior(dm: IndexDataModule, **kwargs) -> PixelCNNModule:
    torch.manual_seed(0)
    net = {"num_codes": 8, "channels": 8, "num_layers": 2, "num_classes": 2, "grid_size": [4, 4]}
    net.update(kwargs.pop("net", {}))
    return PixelCNNModule(net=net, lr=1e-2, scheduler=None, num_log_samples=2, **kwargs)


def make_trainer(tmp_path: Path, epochs: int, callbacks: list) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )


def test_train_probe_scores_unaugmented_train_images_like_val(tmp_path: Path) -> None:
    dm = IndexDataModule(str(fake_views_dataset(tmp_path / "idx")), batch_size=3)
    dm.setup()
    rows = dm.train_probe_rows()
    assert len(rows) == 4 and rows.max() < 6  # as many as val, view 0 only
    model = make_prior(dm, net={"dropout": 0.5})
    trainer = make_trainer(tmp_path, 2, [])
    trainer.fit(model, datamodule=dm)
    # the known truth: the final weights, in eval mode (no dropout), on the probe and the val grids
    model.eval()

    def bits(grids: np.ndarray, labels: np.ndarray) -> float:
        x = torch.from_numpy(grids.astype(np.int64))
        with torch.no_grad():
            return float(F.cross_entropy(model(x, torch.from_numpy(labels)), x)) / math.log(2)

    train, val = dm.datasets["train"], dm.datasets["val"]
    want_train = bits(train.indices[rows], train.labels[rows])
    want_val = bits(val.indices[:], val.labels)
    got = trainer.callback_metrics
    assert float(got["train/eval_bits_per_dim"]) == pytest.approx(want_train, abs=1e-5)
    assert float(got["val/bits_per_dim"]) == pytest.approx(want_val, abs=1e-5)
    assert float(got["val/gap_bits_per_dim"]) == pytest.approx(want_val - want_train, abs=1e-5)
    assert "val/loss" in got  # the checkpoint's monitor keeps its name beside dataloader 1
    off = IndexDataModule(str(tmp_path / "idx"), train_probe=0)
    off.setup()
    assert not isinstance(off.val_dataloader(), list)


class WeightRecorder(L.Callback):
    """The training weights after every optimizer step, and the weights each validation epoch used."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.validated: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self.validated[trainer.current_epoch] = {
                k: v.detach().clone() for k, v in pl_module.net.state_dict().items()
            }


def expected_ema(steps: list[dict], decay: float) -> list[dict]:
    """EMA after each step, by hand: e_1 = w_1, e_{n+1} = e_n + (1 - d_n) (w_{n+1} - e_n)."""
    out = [steps[0]]
    for n, w in enumerate(steps[1:], start=1):
        d = warmed_ema_decay(decay, n)
        out.append({k: out[-1][k] + (w[k] - out[-1][k]) * (1 - d) for k in w})
    return out


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_ema_weights_validate_are_saved_as_best_and_are_sampled_from(tmp_path: Path) -> None:
    dm = IndexDataModule(str(fake_views_dataset(tmp_path / "idx")), batch_size=3)
    decay = 0.8
    model = make_prior(dm, ema_decay=decay, net={"dropout": 0.2})
    recorder = WeightRecorder()
    ckpts = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/loss", mode="min", save_last=True, save_top_k=1
    )
    trainer = make_trainer(tmp_path, 3, [recorder, ckpts])
    trainer.fit(model, datamodule=dm)
    assert any(isinstance(cb, EMA) for cb in trainer.callbacks)  # from model.ema_decay
    per_epoch = len(recorder.steps) // 3
    ema = expected_ema(recorder.steps, decay)
    for epoch, weights in recorder.validated.items():  # validation ran on the average, not the raw weights
        assert _close(weights, ema[(epoch + 1) * per_epoch - 1]), f"epoch {epoch}"
        assert not _close(weights, recorder.steps[(epoch + 1) * per_epoch - 1])

    def net_state(path: Path, key: str = "state_dict") -> dict:
        state = torch.load(path, map_location="cpu", weights_only=True)[key]
        return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}

    best = Path(ckpts.best_model_path)
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
    assert _close(net_state(best), recorder.validated[best_epoch])  # saved = what val/loss selected
    # the raw weights of that step are kept apart (resuming continues from them)
    assert _close(net_state(best, "current_model_state"), recorder.steps[(best_epoch + 1) * per_epoch - 1])
    assert _close(model.net.state_dict(), ema[-1])  # fit ends with the average in the module (test uses it)

    # downstream loading (sample / evaluate / score) gets the EMA weights, and samples come from them
    loaded = PriorCheckpoint(best).load_module("cpu").net
    assert _close(loaded.state_dict(), recorder.validated[best_epoch])
    reference = make_prior(dm, net={"dropout": 0.2}).net
    reference.load_state_dict(recorder.validated[best_epoch])
    labels = torch.tensor([0, 1])
    kw = {"labels": labels, "generator": None}
    a = loaded.generate(2, 4, 4, **{**kw, "generator": torch.Generator().manual_seed(3)})
    b = reference.eval().generate(2, 4, 4, **{**kw, "generator": torch.Generator().manual_seed(3)})
    assert torch.equal(a, b)


def test_ema_decay_is_checked_when_the_module_is_built(tmp_path: Path) -> None:
    dm = IndexDataModule(str(fake_views_dataset(tmp_path / "idx")), batch_size=3)
    for bad in (0.0, 1.0, 1.5, True):
        with pytest.raises(ValueError, match="model.ema_decay"):
            make_prior(dm, ema_decay=bad)


def test_the_best_checkpoint_records_the_validation_that_selected_it(tmp_path: Path) -> None:
    dm = IndexDataModule(str(fake_views_dataset(tmp_path / "idx")), batch_size=3)
    model = make_prior(dm, ema_decay=0.9)
    ckpts = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_top_k=1)
    make_trainer(tmp_path, 2, [ckpts]).fit(model, datamodule=dm)
    record = PriorCheckpoint(ckpts.best_model_path).validation
    assert record["val_bits_per_dim"] == pytest.approx(float(ckpts.best_model_score) / math.log(2), abs=1e-5)
    assert record["gap_bits_per_dim"] == pytest.approx(
        record["val_bits_per_dim"] - record["train_eval_bits_per_dim"], abs=1e-6
    )
    assert (record["n_val"], record["n_train_probe"], record["weights"]) == (4, 4, "ema")


@pytest.mark.slow
def test_memorization_finds_a_copy_of_a_flipped_training_lesion(chain, tmp_path: Path) -> None:
    """Samples whose codes are those of rotated/flipped train images (rows of views >= 1) are copies."""
    import shutil

    from lesion_lightning.metrics.memorization import nearest_hamming
    from lesion_lightning.metrics.sample_quality import memorization_metrics

    train = IndexDataset(chain["indices"], "train")
    files = sorted(chain["samples"].glob("sample_*.png"))
    samples = tmp_path / "samples"
    samples.mkdir()
    for f in files:
        shutil.copy(f, samples / f.name)
    n = train.num_images
    rows = np.array([(1 + i % 7) * n + i % n for i in range(len(files))])  # views 1..7, never identity
    copies = np.asarray(train.indices[rows])
    np.save(samples / "indices.npy", copies)
    # not vacuous: against the un-augmented grids alone these copies are not found
    view0_dist, _ = nearest_hamming(copies, np.asarray(train.indices[:n]), "cpu")
    assert view0_dist.min() > 0
    dm = VQVAECheckpoint(chain["vqvae"]).build_datamodule()
    section = memorization_metrics(
        samples,
        chain["indices"],
        "test",
        dm.split_dataset("train"),
        OmegaConf.create(
            {
                "bootstrap": 50,
                "memorization": {"num_pairs": 2, "percentile": 1.0, "features": True, "max_train": None},
            }
        ),
        tmp_path,
        batch_size=8,
        num_workers=0,
        seed=0,
        device=torch.device("cpu"),
    )
    code = section["code_space"]
    assert code["memorized_fraction"] == 1.0
    assert (code["n_train"], code["n_train_images"], code["train_views"]) == (8 * n, n, 8)
    for pair in code["closest"]:
        assert pair["distance"] == 0.0 and pair["view"] != "identity"
    assert (tmp_path / "memorization.png").is_file()
