"""Non-finite losses stop every training module loudly, and a NaN state is never saved as best or last.

Each case was watched failing on the code before this mechanism (the run finished with exit 0 and a
NaN `best-*.ckpt`; a NaN weight was written to `last.ckpt`; `ckpt_path=last model.lr=...` kept the old lr).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from clihelpers import TINY_VQVAE, compose_config
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from lesion_lightning.modules.base import LesionModule
from lesion_lightning.modules.classifier_module import ClassifierModule
from lesion_lightning.modules.pixelcnn_module import PixelCNNModule
from lesion_lightning.modules.vqvae_module import VQVAEModule
from lesion_lightning.train import train

try:  # the shared checkpoint class; before it existed Lightning's ModelCheckpoint was the only one
    from lesion_lightning.callbacks.checkpointing import FiniteModelCheckpoint as Checkpoint
except ImportError:  # pragma: no cover - only when run against the old code, to watch the tests fail
    Checkpoint = ModelCheckpoint


class Batches(Dataset):
    """Eight fixed random batches' worth of items for any of the three modules."""

    def __init__(self, kind: str, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.kind = kind
        self.images = torch.rand(n, 3, 16, 16, generator=g)
        self.indices = torch.randint(0, 8, (n, 4, 4), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if self.kind == "pixelcnn":
            return {"indices": self.indices[i], "label": self.labels[i]}
        return {"image": self.images[i], "label": self.labels[i]}


def tiny_module(kind: str) -> LesionModule:
    if kind == "vqvae":
        net = dict(hidden_channels=8, res_channels=4, num_res_blocks=1, num_downsamples=2, codebook_size=8)
        return VQVAEModule(net={**net, "code_dim": 4}, lr=1e-3)
    if kind == "pixelcnn":
        net = {"num_codes": 8, "channels": 8, "num_layers": 2, "num_classes": 2}
        return PixelCNNModule(net=net, lr=1e-3, scheduler=None)
    return ClassifierModule(net={"name": "small_cnn"}, class_names=["a", "b"], lr=1e-3, scheduler=None)


def poison_loss_from(module: LesionModule, step: int) -> None:
    """From global step `step` on, the module's training loss is NaN (what an fp16 overflow gives)."""
    shared = module._shared_step

    def step_fn(batch, stage):
        loss = shared(batch, stage)
        if stage == "train" and module.trainer.global_step >= step:
            loss = loss * float("nan")
        return loss

    module._shared_step = step_fn


def trainer_for(tmp_path: Path, max_steps: int = 12, **kw) -> L.Trainer:
    ckpt = Checkpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True, save_top_k=0)
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=[ckpt, *kw.pop("callbacks", [])],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kw,
    )


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def all_finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


@pytest.mark.parametrize("kind", ["vqvae", "pixelcnn", "classifier"])
def test_nan_loss_stops_every_module_naming_step_terms_lr_and_precision(kind: str, tmp_path: Path) -> None:
    module = tiny_module(kind)
    poison_loss_from(module, 5)
    trainer = trainer_for(tmp_path)
    with pytest.raises(RuntimeError, match="non-finite") as err:
        trainer.fit(module, DataLoader(Batches(kind), batch_size=4))
    text = str(err.value)
    assert "global step 5" in text, text
    assert "train/loss=" in text and "loss passed to backward=nan" in text, "every logged loss term is listed"
    assert "learning rate(s): 0.001" in text and "precision: 32-true" in text
    assert "model.lr=0.0001" in text and "trainer.gradient_clip_val" in text, "says what to try"
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert saved_step(last) == 5 and all_finite(last), "last.ckpt stays the last finite state"
    assert str(last) in text, "names the checkpoint to resume from"
    assert trainer.global_step == 5, "no optimizer step was taken with the NaN loss"


class ManualModule(LesionModule):
    """Manual optimization (two optimizers, as an adversarial VQGAN would): both losses are checked."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.g = torch.nn.Linear(4, 4)
        self.d = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        x = batch["image"].flatten(1)[:, :4]
        g_loss = self.g(x).pow(2).mean()
        self.log("train/g_loss", g_loss)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        d_loss = self.d(x).mean() * (float("nan") if self.trainer.global_step >= 6 else 1.0)
        self.log("train/d_loss", d_loss)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.g.parameters(), lr=0.1), torch.optim.SGD(self.d.parameters(), lr=0.01)


def test_manual_optimization_is_checked_too(tmp_path: Path) -> None:
    trainer = trainer_for(tmp_path, max_steps=40)
    with pytest.raises(RuntimeError, match="non-finite") as err:
        trainer.fit(ManualModule(), DataLoader(Batches("classifier"), batch_size=4))
    text = str(err.value)
    assert "train/d_loss=nan" in text and "train/g_loss=" in text
    assert "learning rate(s): 0.1, 0.01" in text


class PoisonWeights(L.Callback):
    """After step `step`'s update, a weight turns NaN while that step's loss was finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_non_finite_weights_are_never_saved_as_last(tmp_path: Path) -> None:
    module = tiny_module("vqvae")
    ckpt = Checkpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        logger=False,
        callbacks=[PoisonWeights(4), ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with pytest.raises(RuntimeError, match="non-finite weights"):
        trainer.fit(module, DataLoader(Batches("vqvae"), batch_size=4))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert saved_step(last) == 3 and all_finite(last)


def test_non_finite_monitored_metric_is_never_saved_as_best(tmp_path: Path) -> None:
    module = tiny_module("vqvae")
    shared = module._shared_step
    # validation images that overflow (as fp16 activations can): val/loss is inf, the weights stay finite
    module._shared_step = lambda b, stage: shared(
        {**b, "image": b["image"] * 1e39} if stage == "val" else b, stage
    )
    ckpt = Checkpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", save_last=True, save_top_k=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = DataLoader(Batches("vqvae", n=8), batch_size=4)
    with pytest.raises(RuntimeError, match="non-finite monitored metric val/loss"):
        trainer.fit(module, loader, loader)
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_resume_with_a_lower_lr_uses_it(tmp_path: Path) -> None:
    """`ckpt_path=last model.lr=<lower>`: optimizer state and schedule come back, the lr is the new one."""
    kw = {"net": {"name": "small_cnn"}, "class_names": ["a", "b"], "scheduler": "constant"}
    trainer = trainer_for(tmp_path, max_steps=4)
    loader = DataLoader(Batches("classifier"), batch_size=4)
    trainer.fit(ClassifierModule(**kw, lr=1e-3), loader)
    trainer2 = trainer_for(tmp_path, max_steps=8)
    trainer2.fit(
        ClassifierModule(**kw, lr=1e-4), loader, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt")
    )
    assert trainer2.global_step == 8, "continued from step 4 to the same max_steps"
    assert trainer2.lr_scheduler_configs[0].scheduler.last_epoch == 8, "the schedule position came back"
    assert trainer2.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4), "the new lr, not 1e-3"
    assert trainer2.lr_scheduler_configs[0].scheduler.base_lrs == [pytest.approx(1e-4)]


@pytest.mark.slow
def test_diverging_vqvae_run_fails_and_leaves_no_nan_checkpoint(tmp_path: Path) -> None:
    """The issue's reproduction (quickstart, model.lr=1e6) through train(cfg): an error, not exit 0."""
    cfg = compose_config(
        "train",
        ["experiment=quickstart", *TINY_VQVAE, "logger=csv", "model.lr=1e6", "trainer.max_steps=12"],
        tmp_path,
    )
    with pytest.raises(RuntimeError, match="non-finite training loss") as err:
        train(cfg)
    assert "train/recon_loss" in str(err.value)
    for ckpt in (tmp_path / "checkpoints").glob("*.ckpt"):
        assert all_finite(ckpt), f"{ckpt.name} holds non-finite weights"
    assert (tmp_path / "diverged.json").is_file(), "the record the pipeline reads to say why it stopped"


@pytest.mark.slow
def test_pipeline_stops_at_the_diverged_stage_and_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys

    from test_pipeline import TINY

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesion_lightning.pipeline",
            *TINY,
            "grid=8",
            "stages=[vqvae,encode]",
            "vqvae.model.lr=1e6",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "pipeline stopped at stage `vqvae`: its training diverged" in proc.stderr, proc.stderr[-3000:]
    assert "vqvae.model.lr=" in proc.stderr and "train/recon_loss" in proc.stderr
    assert not (tmp_path / "run" / "encode").exists(), "no later stage ran"


def test_mixed_precision_run_names_its_precision_and_suggests_full_precision(tmp_path: Path) -> None:
    module = tiny_module("vqvae")
    poison_loss_from(module, 2)
    trainer = trainer_for(tmp_path, precision="bf16-mixed")
    with pytest.raises(RuntimeError, match="non-finite") as err:
        trainer.fit(module, DataLoader(Batches("vqvae"), batch_size=4))
    assert "precision: bf16-mixed" in str(err.value) and "trainer.precision=32-true" in str(err.value)
