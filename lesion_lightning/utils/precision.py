"""Keep a block in IEEE float32, whatever the user or the GPU's defaults say about TF32.

`torch.set_float32_matmul_precision("high")` (which Lightning suggests on Ampere+ GPUs) and cuDNN's
default `allow_tf32=True` let float32 matmuls/convolutions run in TF32 (10-bit mantissa). That is fine
for training, but the quantizer's nearest-code argmin and the samplers' logits must not change with a
global flag: near ties pick other codes, and the cached sampler stops matching the full forward pass.

PyTorch has two APIs for these flags (the legacy `allow_tf32` / `set_float32_matmul_precision` and
the per-backend `fp32_precision` strings of torch >= 2.9) and raises when the legacy getters are read
after the new setters were used. We save, set and restore through whichever API the process is using.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from typing import Any

import torch

# backends with an `fp32_precision` string in the torch >= 2.9 API; only those that exist are touched
_NEW_API = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")


def _backend(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _save() -> tuple[str, Any]:
    try:  # the legacy getters raise once the process mixed in the new API
        return "legacy", (
            torch.get_float32_matmul_precision(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
    except RuntimeError:
        saved = {}
        for path in _NEW_API:
            backend = _backend(path)
            if backend is not None and hasattr(backend, "fp32_precision"):
                saved[path] = backend.fp32_precision
        return "new", saved


def _set_ieee(api: str, saved: Any) -> None:
    if api == "legacy":
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        for path in saved:
            _backend(path).fp32_precision = "ieee"


def _restore(api: str, saved: Any) -> None:
    if api == "legacy":
        precision, matmul_tf32, cudnn_tf32 = saved
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        # last: it sets every backend's matmul precision consistently ("medium" = bf16 on oneDNN);
        # setting allow_tf32 after it would leave a mix the legacy getters refuse to read
        torch.set_float32_matmul_precision(precision)
    else:
        for path, value in saved.items():
            _backend(path).fp32_precision = value


class ieee_float32(ContextDecorator):  # noqa: N801 - used like a function: `with ieee_float32():`
    """Context manager / decorator: float32 matmuls and convolutions in full IEEE precision inside,
    the caller's TF32 settings restored on exit (also on an exception). Re-entrant."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, Any]] = []

    def __enter__(self) -> ieee_float32:
        state = _save()
        self._stack.append(state)
        _set_ieee(*state)
        return self

    def __exit__(self, *exc) -> None:
        _restore(*self._stack.pop())
