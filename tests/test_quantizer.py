"""VectorQuantizer: nearest-code outputs, the loss and where beta goes, EMA, dead-code restarts, k-means init,
float32 search under bf16 autocast, and identical codebooks across DDP ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lesion_lightning.metrics.codebook import CodebookUsage
from lesion_lightning.models import quantizer as quantizer_mod
from lesion_lightning.models.quantizer import VectorQuantizer


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B, D, H, W) -> (BHW, D)


def _set_codebook(vq: VectorQuantizer, codes: torch.Tensor) -> None:
    with torch.no_grad():
        vq.codebook.copy_(codes)
        if vq.ema:
            vq.embed_avg.copy_(codes * vq.cluster_size[:, None])


@pytest.mark.parametrize("ema", [False, True])
def test_outputs_are_nearest_codebook_vectors(ema: bool) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, code_dim=4, ema=ema).eval()
    z = torch.randn(2, 4, 5, 3)  # non-square grid on purpose
    out = vq(z)

    assert out.indices.shape == (2, 5, 3) and out.indices.dtype == torch.long
    assert out.quantized.shape == z.shape and out.quantized.dtype == z.dtype
    expected = vq.codebook[out.indices].permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)
    assert torch.equal(out.quantized, expected)
    assert torch.equal(vq.get_output_from_indices(out.indices), expected)
    # Indices are the argmin of the true distances (float64 reference, no tricks).
    reference = torch.cdist(_flat(z).double(), vq.codebook.double()).argmin(dim=1)
    assert torch.equal(out.indices.reshape(-1), reference)


def test_chunked_distance_search_matches_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4).eval()
    z = torch.randn(3, 4, 6, 6)
    full = vq(z).indices
    monkeypatch.setattr(quantizer_mod, "_MAX_DISTANCE_ELEMENTS", 40)  # chunks of 5 rows out of 108
    assert torch.equal(vq(z).indices, full)


def test_loss_matches_hand_computation_and_beta_multiplies_commitment() -> None:
    vq = VectorQuantizer(codebook_size=3, code_dim=2, beta=0.25)
    _set_codebook(vq, torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    # Two latent vectors (0.1, 0.2) -> code 0 and (0.8, 1.1) -> code 1, laid out as (B=1, D=2, H=1, W=2).
    z = torch.tensor([[0.1, 0.2], [0.8, 1.1]]).t().reshape(1, 2, 1, 2).requires_grad_(True)
    out = vq(z)

    assert out.indices.tolist() == [[[0, 1]]]
    # Squared errors 0.01 + 0.04 and 0.04 + 0.01 over 4 elements: both terms are 0.1 / 4 = 0.025 in value.
    assert out.codebook_loss.item() == pytest.approx(0.025)
    assert out.commitment_loss.item() == pytest.approx(0.025)
    assert out.loss.item() == pytest.approx(0.025 + 0.25 * 0.025)

    # The values cannot tell which term beta multiplies; the gradients can.
    out.loss.backward()
    # d/dz [beta * mean((z - e)^2)] = 2 * beta * (z - e) / 4 = 0.125 * (z - e). (beta on the codebook term: 0.5.)
    expected_z_grad = 0.125 * torch.tensor([[0.1, 0.2], [-0.2, 0.1]]).t().reshape(1, 2, 1, 2)
    torch.testing.assert_close(z.grad, expected_z_grad)
    # d/de [mean((e - z)^2)] = 2 * (e - z) / 4 for the used codes, zero for the unused one (not 0.125 * ...).
    expected_codebook_grad = torch.tensor([[-0.05, -0.1], [0.1, -0.05], [0.0, 0.0]])
    torch.testing.assert_close(vq.codebook.grad, expected_codebook_grad)


def test_each_loss_term_reaches_only_its_side() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    codebook_grad_z, codebook_grad_e = torch.autograd.grad(
        out.codebook_loss, [z, vq.codebook], retain_graph=True, allow_unused=True, materialize_grads=True
    )
    commit_grad_z, commit_grad_e = torch.autograd.grad(
        out.commitment_loss, [z, vq.codebook], allow_unused=True, materialize_grads=True
    )
    assert codebook_grad_z.abs().sum() == 0 and codebook_grad_e.abs().sum() > 0
    assert commit_grad_z.abs().sum() > 0 and commit_grad_e.abs().sum() == 0


def test_straight_through_copies_the_gradient_to_z() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    (grad,) = torch.autograd.grad((vq(z).quantized * upstream).sum(), z)
    torch.testing.assert_close(grad, upstream)
    # ... and the decoder-side gradient does not reach the codebook.
    quantized = vq(z).quantized
    assert torch.autograd.grad(quantized.sum(), vq.codebook, allow_unused=True)[0] is None


def test_ema_mode_has_zero_codebook_loss_and_no_codebook_parameter() -> None:
    vq = VectorQuantizer(codebook_size=8, code_dim=4, beta=0.25, ema=True)
    out = vq(torch.randn(2, 4, 3, 3))
    assert out.codebook_loss.item() == 0.0
    assert out.loss.item() == pytest.approx(0.25 * out.commitment_loss.item())
    assert list(vq.parameters()) == []  # the optimizer must not touch an EMA codebook
    assert "embed" in vq.state_dict()


def test_ema_updates_codebook_in_train_mode_only() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4, ema=True)
    z = torch.randn(4, 4, 4, 4)
    before = vq.codebook.clone()
    vq.eval()(z)
    assert torch.equal(vq.codebook, before)
    vq.train()(z)
    assert not torch.allclose(vq.codebook, before)


def test_ema_with_zero_decay_moves_codes_to_the_mean_of_their_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, code_dim=2, ema=True, ema_decay=0.0)
    centres = torch.tensor([[-3.0, -3.0], [-3.0, 3.0], [3.0, -3.0], [3.0, 3.0]])
    _set_codebook(vq, centres)
    points = centres.repeat_interleave(8, dim=0) + 0.3 * torch.randn(32, 2)  # 8 points around each code
    z = points.t().reshape(1, 2, 4, 8)  # (N, D) -> (1, D, H, W)
    out = vq.train()(z)
    assert torch.bincount(out.indices.reshape(-1), minlength=4).tolist() == [8, 8, 8, 8]
    torch.testing.assert_close(vq.codebook, points.view(4, 8, 2).mean(dim=1), atol=1e-4, rtol=0)


def test_ema_leaves_an_unused_code_in_place() -> None:
    # Counts start at one: an unused code keeps its value after an update. (Zero-initialised counts and sums
    # would send it to 0 / epsilon-smoothed garbage on the first step.)
    vq = VectorQuantizer(codebook_size=3, code_dim=2, ema=True, ema_decay=0.99)
    assert torch.equal(vq.cluster_size, torch.ones(3))
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [9.0, -9.0]])
    _set_codebook(vq, codes)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.0]]).t().reshape(1, 2, 1, 2)
    vq.train()(z)
    torch.testing.assert_close(vq.codebook[2], codes[2], atol=1e-3, rtol=0)


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_are_restarted_from_encoder_outputs(ema: bool) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4, ema=ema, dead_code_threshold=1.0)
    near = torch.randn(4, 4) * 0.1
    far = torch.full((4, 4), 1000.0)  # codes 4..7 are never anyone's nearest code
    _set_codebook(vq, torch.cat([near, far]))
    z = torch.randn(2, 4, 4, 4)
    flat = _flat(z)

    vq.eval()(z)  # no restarts outside training
    assert torch.equal(vq.codebook[4:], far)

    out = vq.train()(z)
    assert set(out.indices.unique().tolist()) <= {0, 1, 2, 3}
    restarted = vq.codebook[4:]
    for code in restarted:  # each restarted code is one of this batch's encoder outputs
        assert (flat == code).all(dim=1).any()
    assert len({tuple(code.tolist()) for code in restarted}) == 4  # drawn without replacement
    assert torch.equal(vq.cluster_size[4:], torch.full((4,), 1.0))
    if ema:  # EMA state agrees with the new codes, so the next update starts from them
        torch.testing.assert_close(vq.embed_avg[4:], restarted * vq.cluster_size[4:, None])
    else:  # used codes are left alone (no optimizer step happened)
        assert torch.equal(vq.codebook[:4], near)


def test_restart_off_by_default_keeps_dead_codes() -> None:
    vq = VectorQuantizer(codebook_size=4, code_dim=2)
    far = torch.tensor([[0.0, 0.0], [500.0, 500.0], [600.0, 600.0], [700.0, 700.0]])
    _set_codebook(vq, far)
    vq.train()(torch.randn(1, 2, 4, 4))
    assert torch.equal(vq.codebook.detach(), far)


@pytest.mark.parametrize("ema", [False, True])
def test_kmeans_init_runs_once_on_the_first_training_batch(ema: bool) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, code_dim=2, ema=ema, kmeans_init=True)
    assert not bool(vq.initted)
    centres = torch.tensor([[20.0, 20.0], [20.0, -20.0], [-20.0, 20.0], [-20.0, -20.0]])
    points = centres.repeat_interleave(16, dim=0) + torch.randn(64, 2)
    z = points.t().reshape(1, 2, 8, 8)
    before = vq.codebook.detach().clone()

    vq.eval()(z)  # not in eval
    assert not bool(vq.initted) and torch.equal(vq.codebook, before)

    out = vq.train()(z)
    assert bool(vq.initted)
    after = vq.codebook.detach().clone()
    # Codes now sit among the data (the init is ~unit scale, the data ~20 away), and quantization error dropped.
    assert (torch.cdist(after, points).min(dim=1).values < 5.0).all()
    init_error = torch.cdist(points, before).min(dim=1).values.pow(2).mean()
    assert out.commitment_loss < 0.5 * init_error / 2  # commitment is the mean over the 2 dims

    if (
        not ema
    ):  # a second training batch does not re-initialise (the non-EMA codebook moves only by optimizer)
        vq(z + 5.0)
        assert torch.equal(vq.codebook.detach(), after)

    reloaded = VectorQuantizer(codebook_size=4, code_dim=2, ema=ema, kmeans_init=True)
    reloaded.load_state_dict(vq.state_dict())
    assert bool(reloaded.initted)


def test_quantize_indices_is_pure_even_in_train_mode() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, code_dim=4, ema=True, dead_code_threshold=5.0, kmeans_init=True)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.randn(2, 4, 4, 4)
    indices = vq.train().quantize_indices(z)
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(indices, vq.eval()(z).indices)


def _hard_case() -> tuple[VectorQuantizer, torch.Tensor]:
    # Codes and latents all near one large vector: distance gaps (~0.1) are far below bf16 resolution of the
    # dot products (~0.5), so a bf16 search picks wrong codes while float32 does not.
    torch.manual_seed(0)
    base = torch.full((8,), 4.0)
    vq = VectorQuantizer(codebook_size=32, code_dim=8).eval()
    _set_codebook(vq, base + 0.1 * torch.randn(32, 8))
    z = (base + 0.1 * torch.randn(256, 8)).t().reshape(1, 8, 16, 16)
    return vq, z


def test_bf16_autocast_keeps_the_float32_search() -> None:
    vq, z = _hard_case()
    reference = torch.cdist(_flat(z).double(), vq.codebook.detach().double()).argmin(dim=1).view(1, 16, 16)
    assert torch.equal(vq(z).indices, reference)
    naive = torch.cdist(_flat(z).bfloat16(), vq.codebook.detach().bfloat16()).argmin(dim=1)
    assert (naive != reference.reshape(-1)).float().mean() > 0.2  # the case really breaks a bf16 search

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
        out_bf16 = vq(z.bfloat16())
    assert torch.equal(out.indices, reference)
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32
    # A bf16 input (the encoder's output under autocast) is searched in float32 after an exact upcast.
    assert torch.equal(out_bf16.indices, vq(z.bfloat16().float()).indices)
    assert out_bf16.quantized.dtype == torch.bfloat16


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    stats = CodebookUsage(codebook_size)(indices)
    return stats["codebook_usage"], stats["perplexity"]


def test_codebook_usage_and_perplexity() -> None:
    usage, perplexity = codebook_usage(torch.arange(8).repeat(3).view(2, 3, 4), codebook_size=8)
    assert usage.item() == 1.0 and perplexity.item() == pytest.approx(8.0)
    usage, perplexity = codebook_usage(torch.full((2, 3, 4), 5), codebook_size=8)
    assert usage.item() == 1 / 8 and perplexity.item() == pytest.approx(1.0)
    usage, perplexity = codebook_usage(torch.tensor([[[0, 0, 1, 1]]]), codebook_size=16)
    assert usage.item() == 2 / 16 and perplexity.item() == pytest.approx(2.0)


def test_rejects_wrong_latent_shape() -> None:
    vq = VectorQuantizer(codebook_size=8, code_dim=4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        vq(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="indices must have shape"):
        vq.get_output_from_indices(torch.zeros(2, 4, dtype=torch.long))


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same initial codebooks on every rank, as DDP would give
        quantizers = [
            VectorQuantizer(16, 4, ema=True, dead_code_threshold=2.0, kmeans_init=True),
            VectorQuantizer(16, 4, ema=False, dead_code_threshold=2.0, kmeans_init=True),
        ]
        torch.manual_seed(100 + rank)  # different data and different random draws on each rank
        for _ in range(3):
            z = torch.randn(2, 4, 4, 4) + 3.0 * rank
            for vq in quantizers:
                vq.train()(z)
        torch.save([vq.state_dict() for vq in quantizers], f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_keep_identical_codebooks(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for state0, state1 in zip(rank0, rank1, strict=True):
        assert bool(state0["initted"])
        for key in state0:
            assert torch.equal(state0[key], state1[key]), key
