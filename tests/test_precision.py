"""ieee_float32: TF32 off inside (legacy and new flag APIs), the caller's settings back afterwards."""

from __future__ import annotations

import pytest
import torch

from lesion_lightning.models import quantizer, sampling
from lesion_lightning.utils.precision import ieee_float32


@pytest.fixture
def restore_flags():
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved[1]
    torch.backends.cudnn.allow_tf32 = saved[2]
    torch.set_float32_matmul_precision(saved[0])  # last, as ieee_float32 does


def _flags() -> tuple[str, bool, bool]:
    return (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )


def test_user_high_precision_is_overridden_inside_and_restored(restore_flags):
    torch.set_float32_matmul_precision("high")  # what Lightning suggests on Ampere+ GPUs
    torch.backends.cudnn.allow_tf32 = True  # cuDNN's own default
    before = _flags()
    assert before == ("high", True, True)
    with ieee_float32():
        assert _flags() == ("highest", False, False)
        with ieee_float32():  # nesting keeps the outer state
            assert _flags() == ("highest", False, False)
        assert _flags() == ("highest", False, False)
    assert _flags() == before


def test_restored_after_an_exception_and_as_decorator(restore_flags):
    torch.set_float32_matmul_precision("medium")
    seen = []

    @ieee_float32()
    def body():
        seen.append(_flags())
        raise KeyError("boom")

    with pytest.raises(KeyError):
        body()
    assert seen == [("highest", False, False)]
    assert torch.get_float32_matmul_precision() == "medium"


def test_new_fp32_precision_api_is_saved_and_restored():
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has only the legacy TF32 flags")
    conv = torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    try:
        matmul.fp32_precision = "tf32"  # a user on the new API: the legacy getters now raise
        conv.fp32_precision = "tf32"
        with ieee_float32():
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def test_quantizer_search_and_samplers_run_in_ieee(restore_flags, monkeypatch):
    torch.set_float32_matmul_precision("high")
    seen = []
    real_addmm = torch.addmm

    def spy(*args, **kwargs):
        seen.append(_flags())
        return real_addmm(*args, **kwargs)

    monkeypatch.setattr(torch, "addmm", spy)
    quantizer._nearest_code(torch.randn(5, 4), torch.randn(3, 4))
    assert seen and set(seen) == {("highest", False, False)}
    assert torch.get_float32_matmul_precision() == "high"

    from lesion_lightning.models.pixelcnn import GatedPixelCNN

    model = GatedPixelCNN(num_codes=4, channels=8, num_layers=2).eval()
    seen.clear()
    for method in ("cached", "naive"):
        inside = []
        monkeypatch.setattr(sampling, "draw", _recording(sampling.draw, inside))
        sampling.sample(model, 1, 2, 2, method=method)
        assert inside and set(inside) == {("highest", False, False)}, method
        monkeypatch.undo()
        torch.set_float32_matmul_precision("high")
    assert torch.get_float32_matmul_precision() == "high"


def _recording(fn, log):
    def wrapper(*args, **kwargs):
        log.append(_flags())
        return fn(*args, **kwargs)

    return wrapper
