"""VQVAE: grid sizes, gradient paths, exact decode of encoded indices, side-effect-free encode, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lesion_lightning.models.vqvae import VQVAE

TINY = dict(hidden_channels=16, res_channels=8, num_res_blocks=1, codebook_size=16, code_dim=4)


def _images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


@pytest.mark.parametrize(("num_downsamples", "grid"), [(3, 32), (2, 64), (1, 128)])
def test_256px_images_give_32_64_128_grids(num_downsamples: int, grid: int) -> None:
    torch.manual_seed(0)
    model = VQVAE(num_downsamples=num_downsamples, hidden_channels=8, res_channels=4, num_res_blocks=1,
                  codebook_size=8, code_dim=4).eval()  # fmt: skip
    assert model.downsample_factor == 2**num_downsamples
    assert model.latent_shape(256) == (grid, grid)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 256))
    assert out.recon.shape == (1, 3, 256, 256)
    assert out.indices.shape == (1, grid, grid) and out.indices.dtype == torch.long
    assert out.quantized.shape == out.z_e.shape == (1, 4, grid, grid)
    assert model.encode(torch.rand(1, 3, 256, 256)).shape == (1, grid, grid)


def test_recon_loss_reaches_encoder_only_through_straight_through() -> None:
    torch.manual_seed(0)
    model = VQVAE(num_downsamples=2, **TINY)
    x = _images()
    out = model(x)
    F.mse_loss(out.recon, x).backward()
    for name, param in model.encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # The reconstruction term never trains the codebook: that is the codebook loss's job.
    assert model.quantizer.codebook.grad is None

    model.zero_grad(set_to_none=True)
    model(x).vq_loss.backward()
    assert model.quantizer.codebook.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.encoder.parameters())  # commitment pulls the encoder


def test_output_fields_and_vq_loss() -> None:
    model = VQVAE(num_downsamples=2, beta=0.25, **TINY)
    out = model(_images())
    assert out._fields == (
        "recon",
        "indices",
        "quantized",
        "z_e",
        "vq_loss",
        "codebook_loss",
        "commitment_loss",
    )
    torch.testing.assert_close(out.vq_loss, out.codebook_loss + 0.25 * out.commitment_loss)


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("dead_code_threshold", [0.0, 1.0])
def test_decode_of_encode_equals_forward_recon_in_eval(ema: bool, dead_code_threshold: float) -> None:
    torch.manual_seed(0)
    model = VQVAE(
        num_downsamples=2, ema=ema, dead_code_threshold=dead_code_threshold, kmeans_init=True, **TINY
    )
    model.train()
    for seed in range(2):  # exercise the k-means init, EMA and restarts before checking
        model(_images(seed=seed))
    model.eval()
    x = _images(seed=5)
    out = model(x)
    indices = model.encode(x)
    assert torch.equal(indices, out.indices)
    assert torch.equal(model.decode_indices(indices), out.recon)


def test_encode_is_deterministic_and_leaves_state_alone_in_train_mode() -> None:
    torch.manual_seed(0)
    model = VQVAE(num_downsamples=2, ema=True, dead_code_threshold=3.0, kmeans_init=True, **TINY).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images()
    first = model.encode(x)
    assert torch.equal(model.encode(x), first)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not bool(model.quantizer.initted)  # encode() never runs the k-means init


@pytest.mark.parametrize("ema", [False, True])
def test_state_dict_round_trip(ema: bool) -> None:
    torch.manual_seed(0)
    args = dict(num_downsamples=2, ema=ema, dead_code_threshold=1.0, kmeans_init=True, **TINY)
    model = VQVAE(**args).train()
    model(_images(seed=1))
    model.eval()

    torch.manual_seed(123)  # a differently initialised copy
    restored = VQVAE(**args)
    restored.load_state_dict(model.state_dict())
    restored.eval()
    x = _images(seed=2)
    expected, got = model(x), restored(x)
    for name in ("recon", "indices", "quantized", "vq_loss"):
        assert torch.equal(getattr(expected, name), getattr(got, name)), name
    assert bool(restored.quantizer.initted)  # a resumed run does not re-run the k-means init


def test_a_few_optimizer_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = VQVAE(num_downsamples=2, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = _images(batch=2)
    losses = []
    for _ in range(20):
        out = model(x)
        loss = F.mse_loss(out.recon, x) + out.vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]  # ~0.37 over seeds 0-3


def test_bf16_autocast_forward_runs_with_float32_losses() -> None:
    torch.manual_seed(0)
    model = VQVAE(num_downsamples=2, **TINY).eval()
    x = _images()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        z_e = model.encoder(x)
    assert out.vq_loss.dtype == torch.float32
    # The search ran in float32 on the (bf16) encoder output.
    flat = z_e.double().permute(0, 2, 3, 1).reshape(-1, 4)  # (B, D, h, w) -> (Bhw, D)
    reference = torch.cdist(flat, model.quantizer.codebook.detach().double())
    assert torch.equal(out.indices.reshape(-1), reference.argmin(dim=1))


def test_bad_image_size_is_a_clear_error() -> None:
    model = VQVAE(num_downsamples=3, **TINY)
    with pytest.raises(ValueError, match="not divisible by the VQ-VAE downsample factor 8"):
        model(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="not divisible"):
        model.latent_shape(100)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 16, 16))
