"""GatedPixelCNN: shapes, causality and the absence of a blind spot (via gradients), conditioning, validation."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from factories import make_pixelcnn

from lesion_lightning.models import pixelcnn
from lesion_lightning.models.pixelcnn import GatedPixelCNN

K = 5


make_model = functools.partial(make_pixelcnn, K, out_hidden=16)


def expected_context(
    height: int, width: int, i: int, j: int, num_layers: int, kernel_size: int
) -> torch.Tensor:
    """Receptive field of the output at (i, j), as a (H, W) bool mask.

    With r = num_layers * (kernel_size // 2): rows i-1-r..i-1 over columns j-r..j+r (the vertical
    stack, shifted down one row, each layer widening by k//2 rows and columns), plus row i over
    columns j-1-r..j-1 (the horizontal stack; mask A excludes column j itself).
    """
    r = num_layers * (kernel_size // 2)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[max(0, i - 1 - r) : i, max(0, j - r) : j + r + 1] = True
    mask[i, max(0, j - 1 - r) : j] = True
    return mask


def dependency_masks(model: GatedPixelCNN, height: int, width: int, labels=None) -> torch.Tensor:
    """(H, W, H, W) bool: [i, j] = which input positions the logits at (i, j) have a nonzero gradient for."""
    g = torch.Generator().manual_seed(1)
    batch = 2 if labels is None else labels.shape[0]
    indices = torch.randint(0, K, (batch, height, width), generator=g)
    # A float leaf standing in for the embedding output, so gradients per input position exist.
    x = model.embedding(indices).permute(0, 3, 1, 2).detach().requires_grad_(True)  # (B, C, H, W)
    logits = model.logits_from_embeddings(x, labels)  # (B, K, H, W)
    deps = torch.zeros(height, width, height, width, dtype=torch.bool)
    for i in range(height):
        for j in range(width):
            (grad,) = torch.autograd.grad(logits[:, :, i, j].sum(), x, retain_graph=True)
            deps[i, j] = grad.abs().sum(dim=(0, 1)) > 0
    return deps


def context_errors(model: GatedPixelCNN, height: int, width: int, labels=None) -> list[str]:
    """Every position whose dependencies differ from the exact receptive field, described."""
    deps = dependency_masks(model, height, width, labels)
    errors = []
    for i in range(height):
        for j in range(width):
            want = expected_context(height, width, i, j, model.num_layers, model.kernel_size)
            got = deps[i, j]
            future = got.flatten()[i * width + j :].nonzero().flatten().tolist()
            missing = (want & ~got).nonzero().tolist()
            extra = (got & ~want).nonzero().tolist()
            if future or missing or extra:
                errors.append(f"({i},{j}): future inputs {future}, blind to {missing}, outside field {extra}")
    return errors


@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("num_layers", [1, 2, 4])
def test_causal_and_no_blind_spot(num_layers: int, kernel_size: int, num_classes: int) -> None:
    model = make_model(num_layers, kernel_size, num_classes)
    labels = torch.tensor([0, 2]) if num_classes else None
    errors = context_errors(model, 6, 7, labels)
    assert not errors, "\n".join(errors[:5])


@pytest.mark.parametrize(("num_layers", "kernel_size", "num_classes"), [(1, 3, 0), (2, 3, 3), (3, 5, 0)])
def test_causal_with_position_embedding(num_layers: int, kernel_size: int, num_classes: int) -> None:
    # The position term reads no data: same exact receptive field, on a non-square grid.
    model = make_model(num_layers, kernel_size, num_classes, grid=(6, 7))
    labels = torch.tensor([0, 2]) if num_classes else None
    errors = context_errors(model, 6, 7, labels)
    assert not errors, "\n".join(errors[:5])


def test_causal_on_wide_grid() -> None:
    # Non-square with W > the field's width: positions far right must not leak into the row below.
    model = make_model(num_layers=2, kernel_size=3)
    errors = context_errors(model, 3, 11)
    assert not errors, "\n".join(errors[:5])


def test_check_detects_a_future_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the shift down, the horizontal stack sees the vertical stack's current row: columns > j.
    monkeypatch.setattr(pixelcnn, "shift_down", lambda v: v)
    errors = context_errors(make_model(num_layers=2), 4, 5)
    assert any("future inputs []" not in e for e in errors)


def test_check_detects_a_blind_spot(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shifting two rows (a strictly-above vertical stack, then the shift again) hides row i-1.
    monkeypatch.setattr(pixelcnn, "shift_down", lambda v: F.pad(v, (0, 0, 2, -2)))
    errors = context_errors(make_model(num_layers=2), 4, 5)
    assert errors and all("future inputs []" in e for e in errors)  # causal, but blind
    assert any("blind to []" not in e for e in errors)


@pytest.mark.parametrize("shape", [(5, 5), (3, 8), (8, 3), (1, 4), (4, 1)])
def test_logits_shape(shape: tuple[int, int]) -> None:
    model = make_model()
    indices = torch.randint(0, K, (2, *shape))
    logits = model(indices)
    assert logits.shape == (2, K, *shape)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # Works as a cross-entropy input directly.
    F.cross_entropy(logits, indices).backward()


def test_no_normalization_and_batch_independence() -> None:
    model = make_model(num_layers=3)
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    assert not [m for m in model.modules() if isinstance(m, norms)]
    indices = torch.randint(0, K, (2, 4, 5))
    other = indices.clone()
    other[1] = (other[1] + 1) % K
    model.train()
    torch.testing.assert_close(model(indices)[0], model(other)[0], rtol=0, atol=0)


def test_conditioning_changes_logits_per_sample() -> None:
    model = make_model(num_layers=2, num_classes=3)
    indices = torch.randint(0, K, (2, 4, 5))
    a = model(indices, torch.tensor([0, 1]))
    b = model(indices, torch.tensor([2, 1]))
    assert (a[0] - b[0]).abs().max() > 1e-4  # the label reaches the logits...
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)  # ...of its own sample only
    # Even the first position (no context at all) depends on the label.
    assert (a[0, :, 0, 0] - b[0, :, 0, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("kernel_size", [1, 2, 4, 0, 3.0])
def test_bad_kernel_size(kernel_size) -> None:
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 3"):
        GatedPixelCNN(K, 8, 2, kernel_size)


def test_bad_indices() -> None:
    model = make_model()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        model(torch.full((1, 3, 3), K))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        model(torch.full((1, 3, 3), -1))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        model(torch.zeros(3, 3, dtype=torch.long))


def test_label_validation() -> None:
    cond = make_model(num_classes=3)
    indices = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="class-conditional.*pass labels"):
        cond(indices)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        cond(indices, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        cond(indices, torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        make_model()(indices, torch.tensor([0, 1]))


@pytest.mark.parametrize("grid", [None, (4, 5)])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_every_parameter_gets_a_gradient(num_classes: int, grid) -> None:
    # DDP (find_unused_parameters=False) fails on parameters that never receive a gradient.
    model = make_model(num_layers=3, num_classes=num_classes, grid=grid)
    indices = torch.randint(0, K, (2, 4, 5))
    labels = torch.tensor([0, 2]) if num_classes else None
    F.cross_entropy(model(indices, labels), indices).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_position_embedding_makes_logits_position_dependent() -> None:
    # A constant grid gives every interior position the same context; (3, 3) and (5, 5) both have their
    # whole receptive field (2 layers, k=3: 3 rows above, +-2 columns) inside the 7x9 grid.
    indices = torch.full((1, 7, 9), 2)
    plain = make_model(num_layers=2)(indices)
    torch.testing.assert_close(plain[..., 3, 3], plain[..., 5, 5])  # translation-equivariant without it
    with_pos = make_model(num_layers=2, grid=(7, 9))(indices)
    assert (with_pos[..., 3, 3] - with_pos[..., 5, 5]).abs().max() > 1e-3


def test_position_embedding_starts_at_zero_and_only_adds_parameters() -> None:
    plain = make_model(num_layers=3, num_classes=2)
    torch.manual_seed(0)
    pos = GatedPixelCNN(K, 12, 3, 3, 2, out_hidden=16, grid_size=[4, 5], position_embedding=True)
    new = set(pos.state_dict()) - set(plain.state_dict())
    assert new == {f"layers.{i}.pos_{a}" for i in range(3) for a in ("row", "col")}
    assert set(plain.state_dict()) <= set(pos.state_dict())
    assert pos.layers[0].pos_row.shape == (24, 4) and pos.layers[0].pos_col.shape == (24, 5)
    # Zero-initialised: before training it is exactly the plain model.
    indices, labels = torch.randint(0, K, (2, 4, 5)), torch.tensor([0, 1])
    torch.testing.assert_close(pos(indices, labels), plain(indices, labels), rtol=0, atol=0)


def test_defaults_keep_old_state_dicts_loadable() -> None:
    # A checkpoint of a model built before position embedding existed (or with it off) loads strictly,
    # with grid_size recorded or not.
    old = make_model(num_layers=2).state_dict()
    assert not [k for k in old if "pos_" in k]
    GatedPixelCNN(K, 12, 2, 3, out_hidden=16).load_state_dict(old)
    GatedPixelCNN(K, 12, 2, 3, out_hidden=16, grid_size=[4, 5]).load_state_dict(old)


def test_position_embedding_validation() -> None:
    with pytest.raises(ValueError, match="position_embedding=True needs grid_size"):
        GatedPixelCNN(K, 8, 2, position_embedding=True)
    for bad in ([4], [4, 0], (4.0, 5), "16x16"):
        with pytest.raises(ValueError, match="grid_size must be"):
            GatedPixelCNN(K, 8, 2, grid_size=bad, position_embedding=True)
    model = make_model(grid=(4, 5))
    with pytest.raises(ValueError, match=r"built for 4x5 grids .* got a 5x4 grid"):
        model(torch.zeros(1, 5, 4, dtype=torch.long))
    # Without position embedding, grid_size is only recorded: any grid works.
    assert GatedPixelCNN(K, 8, 2, grid_size=[4, 5])(torch.zeros(1, 6, 3, dtype=torch.long)).shape == (
        1,
        K,
        6,
        3,
    )


@pytest.mark.parametrize(("num_layers", "kernel_size", "num_classes"), [(2, 3, 0), (3, 5, 3)])
def test_dropout_keeps_the_exact_context_in_eval_and_causality_in_training(
    num_layers: int, kernel_size: int, num_classes: int
) -> None:
    model = make_model(num_layers, kernel_size, num_classes, grid=(5, 6), dropout=0.5)
    labels = torch.tensor([0, 2]) if num_classes else None
    errors = context_errors(model.eval(), 5, 6, labels)
    assert not errors, "\n".join(errors[:5])
    # training mode: units drop at random (a dropped unit may cut a path, so "blind to" can happen), but
    # the masks never read data or move between positions: still no future input anywhere
    model.train()
    deps = dependency_masks(model, 5, 6, labels)
    for i in range(5):
        for j in range(6):
            assert not deps[i, j].flatten()[i * 6 + j :].any(), f"({i},{j}) depends on a future position"


def test_dropout_is_active_in_training_and_the_identity_in_eval() -> None:
    model = make_model(num_layers=2, dropout=0.3)
    plain = make_model(num_layers=2)  # same seed, same weights, no dropout
    plain.load_state_dict(model.state_dict())
    indices = torch.randint(0, K, (2, 4, 5))
    model.train()
    assert not torch.equal(model(indices), model(indices))
    model.eval()
    torch.testing.assert_close(model(indices), plain.eval()(indices), rtol=0, atol=0)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, "0.2", True])
def test_bad_dropout(dropout) -> None:
    with pytest.raises(ValueError, match="dropout must be a number in"):
        GatedPixelCNN(K, 8, 2, dropout=dropout)


def test_check_detects_a_dropout_that_mixes_positions() -> None:
    # a "dropout" scaled by a statistic over the grid (what a spatial normalization would do) leaks the
    # future into every position: the context check above would catch such a regularizer
    class GridScaledDropout(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * (1 + x.mean(dim=(2, 3), keepdim=True))

    model = make_model(num_layers=2, dropout=0.5).eval()
    for layer in model.layers:
        layer.drop = GridScaledDropout()
    assert any("future inputs []" not in e for e in context_errors(model, 4, 5))
