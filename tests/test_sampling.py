"""Samplers: the cached sampler is exact (same logits as the full forward pass), naive and cached draw
the same grids for the same seed, and the draw itself follows softmax(logits / T)."""

from __future__ import annotations

import pytest
import torch
from factories import make_pixelcnn

from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.models.sampling import (
    SamplingOptions,
    cached_logits_for_grid,
    draw,
    sample,
    sample_cached,
    sample_naive,
    truncate,
)

K = 16


@pytest.fixture(autouse=True)
def no_tf32():
    """Exactness is checked in true float32; TF32 matmuls (GPU) would need a looser tolerance."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def make_model(*args, **kwargs) -> GatedPixelCNN:
    """A small model (see factories.make_pixelcnn) in eval mode."""
    return make_pixelcnn(K, *args, **kwargs).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("num_layers", "kernel_size", "height", "width", "num_classes", "position"),
    [
        (1, 3, 6, 7, 0, False),
        (3, 3, 6, 7, 3, False),
        (1, 5, 5, 8, 0, False),
        (3, 5, 7, 4, 2, False),
        (2, 7, 4, 9, 0, False),
        (2, 3, 1, 6, 0, False),
        (2, 3, 5, 1, 2, False),
        (3, 3, 6, 7, 0, True),
        (3, 3, 7, 5, 3, True),
        (2, 5, 5, 8, 2, True),
        (2, 3, 1, 6, 0, True),
    ],
)
def test_cached_logits_equal_full_forward(
    num_layers, kernel_size, height, width, num_classes, position
) -> None:
    model = make_model(num_layers, kernel_size, num_classes, grid=(height, width) if position else None)
    indices = torch.randint(0, K, (3, height, width), generator=gen(1))
    labels = torch.tensor([0, 1, 1]) if num_classes else None
    full = model(indices, labels)
    cached = cached_logits_for_grid(model, indices, labels)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    # Not vacuous: the logits vary over positions and grids.
    assert full.std(dim=(2, 3)).min() > 1e-4


@pytest.mark.parametrize(
    ("num_classes", "temperature", "position"),
    [(0, 1.0, False), (3, 1.0, False), (0, 0.6, False), (2, 1.7, False), (0, 1.0, True), (3, 0.8, True)],
)
def test_naive_and_cached_draw_the_same_grids(num_classes: int, temperature: float, position: bool) -> None:
    model = make_model(num_layers=3, num_classes=num_classes, grid=(4, 5) if position else None)
    labels = torch.tensor([0, 1, 1]) if num_classes else None
    kwargs = dict(labels=labels, options=SamplingOptions(temperature=temperature))
    naive = sample_naive(model, 3, 4, 5, generator=gen(7), **kwargs)
    cached = sample_cached(model, 3, 4, 5, generator=gen(7), **kwargs)
    assert torch.equal(naive, cached)
    assert cached.dtype == torch.long and cached.shape == (3, 4, 5)
    assert int(cached.min()) >= 0 and int(cached.max()) < K
    assert not cached.is_inference()  # usable as a normal tensor (e.g. fed back into training)


def test_seeds() -> None:
    model = make_model()
    a = sample_cached(model, 2, 5, 6, generator=gen(1))
    b = sample_cached(model, 2, 5, 6, generator=gen(1))
    c = sample_cached(model, 2, 5, 6, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the batch elements draw independently


def test_low_temperature_is_greedy() -> None:
    model = make_model(num_layers=2)
    grid = sample_cached(model, 2, 4, 5, options=SamplingOptions(temperature=1e-4), generator=gen(3))
    # Each drawn code is the argmax of the model's logits given the codes before it.
    assert torch.equal(grid, model(grid).argmax(dim=1))


def test_draw_follows_softmax() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, float("-inf")]])
    n = 200_000
    u = torch.rand(n, generator=gen(0))
    for temperature in (1.0, 0.5):
        codes = draw(logits.expand(n, -1), u, temperature)
        freq = torch.bincount(codes, minlength=5).float() / n
        torch.testing.assert_close(freq, torch.softmax(logits[0] / temperature, -1), rtol=0, atol=5e-3)
    # The extremes of u stay in range and never pick a zero-probability code, first or last.
    u_max = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    edges = torch.stack([torch.tensor(0.0), u_max])
    assert draw(logits.expand(2, -1), edges, 1.0).tolist() == [3, 0]
    masked = torch.tensor([[float("-inf"), 0.0, 1.0, float("-inf")]]).expand(2, -1)
    assert draw(masked, edges, 1.0).tolist() == [2, 1]


def test_progress_is_called_after_each_row() -> None:
    model = make_model(num_layers=1)
    for sampler in (sample_naive, sample_cached):
        calls = []
        sampler(model, 1, 3, 4, progress=lambda done, total, calls=calls: calls.append((done, total)))
        assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_bad_temperature(temperature: float) -> None:
    for sampler in (sample_naive, sample_cached):
        with pytest.raises(ValueError, match="temperature must be a number > 0"):
            sampler(make_model(num_layers=1), 1, 2, 2, options=SamplingOptions(temperature=temperature))


def test_dispatch_and_generate() -> None:
    model = make_model(num_classes=2)
    labels = torch.tensor([1, 0])
    ref = sample_naive(model, 2, 3, 4, labels=labels, generator=gen(5))
    assert torch.equal(sample(model, 2, 3, 4, labels=labels, generator=gen(5)), ref)
    assert torch.equal(model.generate(2, 3, 4, labels=labels, generator=gen(5), method="naive"), ref)
    with pytest.raises(ValueError, match="unknown method 'beam'"):
        sample(model, 2, 3, 4, labels=labels, method="beam")
    with pytest.raises(ValueError, match="pass labels"):
        model.generate(2, 3, 4)
    with pytest.raises(ValueError, match="height must be a positive integer"):
        model.generate(2, 0, 4, labels=labels)


def test_samplers_refuse_another_grid_size_with_position_embedding() -> None:
    model = make_model(num_classes=2, grid=(4, 5))
    labels = torch.tensor([0, 1])
    for call in (
        lambda: sample_cached(model, 2, 5, 5, labels=labels),
        lambda: sample_naive(model, 2, 4, 6, labels=labels),
        lambda: model.generate(2, 8, 8, labels=labels),
        lambda: cached_logits_for_grid(model, torch.zeros(2, 3, 5, dtype=torch.long), labels),
    ):
        with pytest.raises(ValueError, match=r"built for 4x5 grids"):
            call()
    assert sample_cached(model, 2, 4, 5, labels=labels, generator=gen(0)).shape == (2, 4, 5)


@pytest.mark.parametrize("method", ["naive", "cached"])
def test_given_uniforms_make_each_grid_independent_of_its_batch(method: str) -> None:
    model = make_model(num_layers=2, num_classes=2)
    u = torch.rand(3, 4, 5, generator=gen(3))
    labels = torch.tensor([0, 1, 1])
    together = sample(model, 3, 4, 5, labels=labels, uniforms=u, method=method)
    alone = sample(model, 1, 4, 5, labels=labels[2:], uniforms=u[2:], method=method)
    assert torch.equal(together[2:], alone)
    assert torch.equal(together, sample(model, 3, 4, 5, labels=labels, uniforms=u, method="naive"))
    with pytest.raises(ValueError, match="uniforms must have shape"):
        sample(model, 2, 4, 5, labels=labels[:2], uniforms=u, method=method)


# ------------------------------------------------------------------------ guidance and truncation
def make_guided_model(num_classes: int = 3, grid: tuple[int, int] | None = None) -> GatedPixelCNN:
    """A conditional model with the "no class" label, its embeddings randomised so every class differs."""
    torch.manual_seed(0)
    model = GatedPixelCNN(
        K, 12, 3, 3, num_classes, grid_size=grid, position_embedding=bool(grid), null_class=True
    )
    for layer in model.layers:
        torch.nn.init.normal_(layer.cond.weight)
        if grid:
            torch.nn.init.normal_(layer.pos_row)
            torch.nn.init.normal_(layer.pos_col)
    return model.eval()


@pytest.mark.parametrize(("guidance", "position"), [(1.0, False), (3.0, True), (0.5, False)])
def test_guided_cached_logits_equal_the_guided_full_forward(guidance: float, position: bool) -> None:
    model = make_guided_model(grid=(5, 6) if position else None)
    indices = torch.randint(0, K, (3, 5, 6), generator=gen(1))
    labels = torch.tensor([0, 2, 1])
    cond = model(indices, labels)
    uncond = model(indices, torch.full_like(labels, model.null_label))
    expected = (1 + guidance) * cond - guidance * uncond
    torch.testing.assert_close(
        cached_logits_for_grid(model, indices, labels, guidance), expected, rtol=1e-5, atol=1e-5
    )
    # Not vacuous: guidance changes the logits, and the null label differs from every class.
    assert (expected - cond).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("guidance", "temperature", "top_k", "top_p", "position"),
    [
        (2.0, 1.0, None, None, False),
        (1.0, 0.8, 5, None, True),
        (4.0, 1.2, None, 0.7, False),
        (1.5, 1.0, 6, 0.9, True),
    ],
)
def test_guided_naive_and_cached_draw_the_same_grids(guidance, temperature, top_k, top_p, position) -> None:
    model = make_guided_model(grid=(4, 5) if position else None)
    labels = torch.tensor([0, 1, 2])
    kwargs = dict(labels=labels, options=SamplingOptions(temperature, guidance, top_k, top_p))
    naive = sample_naive(model, 3, 4, 5, generator=gen(7), **kwargs)
    cached = sample_cached(model, 3, 4, 5, generator=gen(7), **kwargs)
    assert torch.equal(naive, cached)
    unguided = sample_cached(
        model, 3, 4, 5, generator=gen(7), labels=labels, options=SamplingOptions(temperature=temperature)
    )
    assert not torch.equal(cached, unguided)  # the same uniforms, another distribution
    # The naive reference really is guided: its first code is the draw from the guided logits at (0, 0).
    u0 = torch.rand(3, generator=gen(7))
    first = model(torch.zeros(6, 4, 5, dtype=torch.long), torch.tensor([0, 1, 2, 3, 3, 3]))[:, :, 0, 0]
    mixed = (1 + guidance) * first[:3] - guidance * first[3:]
    assert torch.equal(naive[:, 0, 0], draw(mixed, u0, temperature, top_k, top_p))


def test_guidance_needs_a_prior_trained_with_condition_dropout() -> None:
    plain = make_model(num_classes=2)
    labels = torch.tensor([0, 1])
    for call in (
        lambda: sample_cached(plain, 2, 3, 4, labels=labels, options=SamplingOptions(guidance=1.0)),
        lambda: sample_naive(plain, 2, 3, 4, labels=labels, options=SamplingOptions(guidance=1.0)),
        lambda: cached_logits_for_grid(plain, torch.zeros(2, 3, 4, dtype=torch.long), labels, guidance=1.0),
    ):
        with pytest.raises(ValueError, match="trained without condition dropout.*model.cond_dropout=0.1"):
            call()
    with pytest.raises(ValueError, match="needs a class-conditional prior"):
        sample_cached(make_model(), 2, 3, 4, options=SamplingOptions(guidance=1.0))
    with pytest.raises(ValueError, match="null_class=True .* needs a class-conditional prior"):
        GatedPixelCNN(K, 8, 1, null_class=True)
    guided = make_guided_model(num_classes=2)
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
            sample_cached(guided, 2, 3, 4, labels=labels, options=SamplingOptions(guidance=bad))
    # The null label is a valid label of its own (unconditional samples); one past it is not.
    assert sample_cached(guided, 2, 3, 4, labels=torch.tensor([2, 2]), generator=gen(0)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\) \(2 = the 'no class' label\)"):
        sample_cached(guided, 2, 3, 4, labels=torch.tensor([3, 0]))


def test_truncation_keeps_the_top_k_and_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    assert torch.isfinite(truncate(logits, top_k=2)).tolist() == [[False, True, False, True, False]]
    # nucleus 0.8: 0.4 + 0.3 = 0.7 < 0.8, so 0.15 joins; 0.85 >= 0.8 stops there
    assert torch.isfinite(truncate(logits, top_p=0.8)).tolist() == [[False, True, False, True, True]]
    assert torch.isfinite(truncate(logits, top_p=0.01)).tolist() == [[False, True, False, False, False]]
    assert torch.equal(truncate(logits, top_k=5, top_p=1.0), logits)
    n = 100_000
    codes = draw(logits.expand(n, -1), torch.rand(n, generator=gen(0)), 1.0, top_k=3)
    freq = torch.bincount(codes, minlength=5).float() / n
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.4, 0.0, 0.3, 0.15]) / 0.85, rtol=0, atol=5e-3)
    for kwargs, match in (
        ({"top_k": 0}, "top_k must be"),
        ({"top_p": 0.0}, "top_p must be"),
        ({"top_p": 1.5}, "top_p"),
    ):
        with pytest.raises(ValueError, match=match):
            sample_cached(make_model(num_layers=1), 1, 2, 2, options=SamplingOptions(**kwargs))


def _state_bytes(state) -> int:
    """Bytes of every per-batch tensor IncrementalState holds (weights excluded: shared by all grids)."""
    seen, total = set(), 0
    for value in vars(state).values():
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, torch.Tensor) and id(t) not in seen and t.shape[:1] == (state.B,):
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def test_auto_batch_size_counts_the_guidance_streams() -> None:
    """The memory model against what the cached sampler really allocates: guided sampling runs 2B
    rows, so its per-grid estimate must cover twice the state, and the batch it picks halves."""
    from lesion_lightning.models.sampling import IncrementalState, auto_batch_size, bytes_per_grid

    model = make_model(num_classes=3, null_class=True)
    h = w = 8
    labels = torch.tensor([0, 1, 2, 0])
    plain = _state_bytes(IncrementalState(model, 4, h, w, labels)) / 4
    guided = _state_bytes(IncrementalState(model, 8, h, w, torch.cat([labels, labels]))) / 4
    assert guided == pytest.approx(2 * plain, rel=0.01)  # the real cost: two streams per grid
    assert bytes_per_grid(model, h, w, streams=1) >= plain
    assert bytes_per_grid(model, h, w, streams=2) >= guided
    budget = 100 * bytes_per_grid(model, h, w, streams=2)
    one = auto_batch_size(model, h, w, 10_000, torch.device("cpu"), SamplingOptions(), budget=budget)
    two = auto_batch_size(
        model, h, w, 10_000, torch.device("cpu"), SamplingOptions(guidance=2.0), budget=budget
    )
    assert two == 100 and 180 <= one <= 200
