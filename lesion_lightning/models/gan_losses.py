"""The VQGAN objective's pieces (Esser et al. 2021, taming-transformers' VQLPIPSWithDiscriminator).

Plain functions on tensors, free of Lightning. Generator side:

    loss_G = rec + perceptual_weight * lpips + vq_loss + lambda * g_adv,    g_adv = -mean(D(x_hat))
    lambda = disc_weight * clamp(||grad_L rec|| / (||grad_L g_adv|| + 1e-4), 0, max_weight)   (detached)

with L the decoder's last layer weight, so the adversarial term's gradient there is kept at disc_weight times
the reconstruction's. Discriminator side: the hinge loss 0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).
Everything here is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RECON_LOSSES = ("l1", "mse")
EPS = 1e-4  # taming's epsilon in the adaptive weight's denominator


def reconstruction_loss(recon: Tensor, x: Tensor, kind: str) -> Tensor:
    """Per-pixel mean L1 or MSE in float32 (taming uses L1: less blur-seeking than MSE's mean)."""
    if kind == "l1":
        return F.l1_loss(recon.float(), x.float())
    if kind == "mse":
        return F.mse_loss(recon.float(), x.float())
    raise ValueError(f"model.loss.recon must be one of {RECON_LOSSES}, got {kind!r}")


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """0.5 * (E relu(1 - D(x)) + E relu(1 + D(x_hat))): zero once real logits >= 1 and fake ones <= -1."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def generator_adv_loss(logits_fake: Tensor) -> Tensor:
    """The generator's hinge term -E D(x_hat) (unbounded below, hence the adaptive weight)."""
    return -logits_fake.float().mean()


def adaptive_weight(
    rec_loss: Tensor,
    g_adv: Tensor,
    last_layer: Tensor,
    disc_weight: float,
    max_weight: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(lambda, ||grad_L rec||, ||grad_L g_adv||), all float32 scalars, lambda detached.

    `rec_loss` is the whole reconstruction term (pixel + perceptual), as in taming. Both gradients are taken
    with retain_graph, so the caller can still backpropagate the total. The clamp at `max_weight` stops the
    weight from exploding when the adversarial gradient vanishes (taming-transformers #44 / #93); a
    non-finite ratio (e.g. an overflowed fp16 gradient) gives 0, i.e. that step is trained without g_adv.
    """
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_gan,) = torch.autograd.grad(g_adv, last_layer, retain_graph=True)
    rec_norm = torch.linalg.vector_norm(g_rec.float())
    gan_norm = torch.linalg.vector_norm(g_gan.float())
    ratio = rec_norm / (gan_norm + EPS)
    ratio = torch.where(torch.isfinite(ratio), ratio, torch.zeros_like(ratio))
    weight = ratio.clamp(0.0, max_weight) * disc_weight
    return weight.detach(), rec_norm.detach(), gan_norm.detach()
