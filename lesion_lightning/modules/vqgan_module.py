"""Stage 1 with an adversarial loss (VQGAN, Esser et al. 2021): the VQ-VAE network trained against a PatchGAN.

The network, validation/test metrics and pictures are VQVAEModule's; only training differs. Lightning manual
optimization, per batch (one "generator step"):

    1. generator: rec (+ LPIPS) + vq_loss + lambda * g_adv  ->  Adam on the VQ-VAE's parameters
    2. discriminator, once generator_steps >= loss.disc_start: hinge loss on D(x), D(x_hat.detach())

lambda is the adaptive weight of models/gan_losses.py (zero before disc_start). Each optimizer has its own LR
schedule; the discriminator's counts its own steps from disc_start. Lightning's `trainer.global_step` counts
every optimizer step, so it advances by 2 per batch once the discriminator is on; disc_start and the
schedules count batches (the persistent `generator_steps` counter), which is what `disc_start` means.

The checkpoint is a VQ-VAE checkpoint: `lesion_lightning.module` is "VQVAEModule", `hyper_parameters` hold
only VQVAEModule's arguments and `state_dict` only the network, so encode/sample/evaluate/score/utility load
it through modules/checkpoints.py unchanged. The discriminator, the step counter and the adversarial
settings live under the checkpoint's "vqgan" key, which only this module reads back (on resume and test).
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import Tensor

from lesion_lightning.models.discriminator import PatchDiscriminator
from lesion_lightning.models.gan_losses import (
    adaptive_weight,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from lesion_lightning.modules.optim import adam_with_schedule
from lesion_lightning.modules.vqvae_module import VQVAEModule

log = logging.getLogger(__name__)

# the checkpoint section only this module reads; downstream readers never look at it
STATE_KEY = "vqgan"
# VQVAEModule's constructor arguments: what a downstream load_from_checkpoint passes to it
VQVAE_ARGS = tuple(p for p in inspect.signature(VQVAEModule.__init__).parameters if p != "self")


def _grad_norm(params) -> Tensor:
    """L2 norm of all gradients together (as the optimizer sees them: loss-scaled under 16-mixed)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())


class VQGANModule(VQVAEModule):
    """VQVAEModule + PatchGAN discriminator + adaptive adversarial weight (+ optional LPIPS).

    Logs (train, per step and epoch) `train/loss`, `train/recon_loss` (the configured L1/MSE), `train/mse`,
    `train/g_adv`, `train/adaptive_weight`, `train/d_loss`, `train/logits_real`, `train/logits_fake` (means of
    the float32 PatchGAN logits), `train/disc_active`, `train/grad_norm_g`, `train/grad_norm_d`, and the two
    last-layer gradient norms the adaptive weight divides (`train/last_layer_grad_rec`, `..._adv`).
    """

    def __init__(
        self,
        net: dict,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        scheduler: str | None = None,
        warmup_steps: int = 0,
        compile: bool = False,
        channels_last: bool = False,
        betas: tuple[float, float] = (0.5, 0.9),
        discriminator: dict | None = None,
        disc_optim: dict | None = None,
        loss: dict | None = None,
    ) -> None:
        super().__init__(net, lr, weight_decay, scheduler, warmup_steps, compile, channels_last)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.loss_cfg = {
            "recon": "l1",
            "disc_start": 2000,
            "disc_weight": 0.5,
            "adaptive_weight_max": 1.0e4,
            "perceptual_weight": 1.0,
            "lpips_weights": None,
            "lpips_net": "vgg",
            **(loss or {}),
        }
        self.disc_optim_cfg = {
            "lr": lr,
            "weight_decay": 0.0,
            "scheduler": None,
            "warmup_steps": 0,
            **(disc_optim or {}),
        }
        if self.loss_cfg["disc_start"] < 0:
            raise ValueError(f"model.loss.disc_start must be >= 0, got {self.loss_cfg['disc_start']}")
        self.discriminator = PatchDiscriminator(in_channels=self.net.in_channels, **(discriminator or {}))
        self.perceptual = self._build_perceptual()
        # generator steps (batches) done so far: decides the switch-on, survives resume
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))

    def _build_perceptual(self):
        weights, weight = self.loss_cfg["lpips_weights"], float(self.loss_cfg["perceptual_weight"])
        if not weights or weight <= 0:
            log.info(
                "VQGAN: LPIPS perceptual term off (model.loss.lpips_weights=%s, perceptual_weight=%s)",
                weights,
                weight,
            )
            return None
        from lesion_lightning.models.perceptual import LPIPSLoss

        return LPIPSLoss(weights, self.loss_cfg["lpips_net"])

    @property
    def disc_active(self) -> bool:
        return int(self.generator_steps) >= int(self.loss_cfg["disc_start"])

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        h, d = self.hparams, self.disc_optim_cfg
        total = int(self.trainer.estimated_stepping_batches)
        gen = adam_with_schedule(
            self.net.parameters(), h.lr, h.weight_decay, h.scheduler, h.warmup_steps, total, betas=h.betas
        )
        disc = adam_with_schedule(
            self.discriminator.parameters(),
            d["lr"],
            d["weight_decay"],
            d["scheduler"],
            d["warmup_steps"],
            max(total - int(self.loss_cfg["disc_start"]), 1),
            betas=h.betas,
        )
        return [gen, disc]

    def _scheduler_of(self, optimizer):
        """The LR scheduler configured for this (Lightning-wrapped) optimizer, or None."""
        for config in self.trainer.lr_scheduler_configs:
            if config.scheduler.optimizer is optimizer.optimizer:
                return config.scheduler
        return None

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        x = batch["image"]
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        disc_on = self.disc_active
        zero = x.new_zeros((), dtype=torch.float32)
        metrics: dict[str, Tensor] = {"train/disc_active": zero + float(disc_on)}

        # 1. generator (encoder, quantizer, decoder); the discriminator's parameters are frozen meanwhile
        self.toggle_optimizer(opt_g)
        out = self.net(x)
        rec = reconstruction_loss(out.recon, x, self.loss_cfg["recon"])
        rec_total = rec
        if self.perceptual is not None:
            p_loss = self.perceptual(out.recon, x)
            rec_total = rec + float(self.loss_cfg["perceptual_weight"]) * p_loss
            metrics["train/perceptual_loss"] = p_loss
        g_adv, weight = zero, zero
        if disc_on:
            g_adv = generator_adv_loss(self.discriminator(out.recon))
            weight, rec_norm, adv_norm = adaptive_weight(
                rec_total,
                g_adv,
                self.net.last_layer,
                float(self.loss_cfg["disc_weight"]),
                float(self.loss_cfg["adaptive_weight_max"]),
            )
            metrics.update({"train/last_layer_grad_rec": rec_norm, "train/last_layer_grad_adv": adv_norm})
        loss = rec_total + out.vq_loss + weight * g_adv
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        metrics["train/grad_norm_g"] = _grad_norm(self.net.parameters())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if (sched := self._scheduler_of(opt_g)) is not None:
            sched.step()
        self.generator_steps += 1

        # 2. discriminator, on real images and detached reconstructions
        if disc_on:
            self.toggle_optimizer(opt_d)
            logits_real = self.discriminator(x)
            logits_fake = self.discriminator(out.recon.detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            metrics["train/grad_norm_d"] = _grad_norm(self.discriminator.parameters())
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            if (sched := self._scheduler_of(opt_d)) is not None:
                sched.step()
            metrics.update(
                {
                    "train/d_loss": d_loss.detach(),
                    "train/logits_real": logits_real.detach().mean(),
                    "train/logits_fake": logits_fake.detach().mean(),
                }
            )

        metrics.update(
            {
                "train/recon_loss": rec.detach(),
                "train/mse": torch.nn.functional.mse_loss(out.recon.detach().float(), x.float()),
                "train/codebook_loss": out.codebook_loss.detach(),
                "train/commitment_loss": out.commitment_loss.detach(),
                "train/g_adv": g_adv.detach(),
                "train/adaptive_weight": weight,
            }
        )
        self.log_dict(metrics, on_step=True, on_epoch=True, batch_size=x.size(0))
        self.log(
            "train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=x.size(0)
        )

    # ------------------------------------------------------------------ checkpoint = a VQ-VAE checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lesion_lightning"] = {"module": VQVAEModule.__name__, "first_stage": "vqgan"}
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        checkpoint["hyper_parameters"] = {k: v for k, v in hparams.items() if k in VQVAE_ARGS}
        state = checkpoint["state_dict"]
        own = {k: state.pop(k) for k in list(state) if not k.startswith("net.")}
        checkpoint[STATE_KEY] = {
            "hyper_parameters": {k: v for k, v in hparams.items() if k not in VQVAE_ARGS},
            # the LPIPS network is frozen and re-read from its file: not stored
            "state_dict": {k: v for k, v in own.items() if not k.startswith("perceptual.")},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        section = checkpoint.get(STATE_KEY)
        if section is None:
            raise ValueError(
                "this checkpoint has no discriminator state (it was written by a plain VQ-VAE run), so a VQGAN "
                "run cannot resume from it; resume with the model it was trained with (model=vqvae)"
            )
        checkpoint["state_dict"].update(section["state_dict"])
        if self.perceptual is not None:
            checkpoint["state_dict"].update(
                {f"perceptual.{k}": v for k, v in self.perceptual.state_dict().items()}
            )
