"""Samplers for GatedPixelCNN: naive (one full forward pass per position) and cached (incremental).

The cached sampler follows Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models": it keeps, per layer, exactly the activations the next position needs and
computes one "column" of the network per position, giving the same logits as the full forward pass.

How the work is split (p = kernel_size // 2, C = channels, L = layers):

- Vertical stack, once per finished row. Row r of a layer's vertical pre-activation needs rows
  r-p..r of that layer's vertical input, so each layer keeps a ring of its last p+1 input rows,
  (B, C, p+1, W+2p) with zero columns for the side padding. When row r is complete, a row-level
  conv over the ring gives row r of every layer's pre-activation (B, 2C, W); gating it gives row r
  of the next layer's vertical input. Because of the shift-down link, that row feeds the
  horizontal stack of row r+1: we fold it right away into a per-layer "row term"
  v_to_h(v_pre[r]) + biases + class embedding, (B, W, 2C), read at every position of row r+1.
- Horizontal stack + head, once per position. Each layer keeps its horizontal input for the
  current row, (B, W + pad, C) with zero left padding; the window of the last p+1 columns is a
  strided view that flattens to (B, (p+1)*C) without a copy, so a layer is one addmm against the
  conv weight reshaped once to ((p+1)*C, 2C), the gate, and one addmm for the residual 1x1. The
  skip 1x1s of all layers are one addmm over the concatenated gate outputs (B, L*C).
- Position embedding (optional, see pixelcnn.py): a layer's term row[i] + col[j] enters both gates.
  The horizontal one costs nothing per position: the row term is already (B, W, 2C), indexed by
  column, so each row folds in col (W, 2C, transposed once per sampler call) and row[i + 1] when it
  is built. The vertical gate adds row[r] + col to the (B, 2C, W) row pre-activation in finish_row.

Random draws: both samplers draw u ~ U[0, 1) of shape (B,) per position from the same generator,
in the same order, and pick codes by inverse CDF of softmax(logits / T) in float32 (``draw``), so
with the same seed they return the same grids (up to float rounding differences in the logits).
``top_k`` / ``top_p`` truncate that distribution first (the k most likely codes / the smallest set
holding probability >= p, as in Fan et al. 2018 and Holtzman et al. 2020), still before the draw.

Classifier-free guidance (Ho & Salimans 2022), ``guidance=w > 0``: a prior trained with condition
dropout (``null_class``) gives conditional logits c (the requested class) and unconditional ones u (the
"no class" label) from one network; the draw uses (1 + w) * c - w * u. Both streams run as ONE batch
of 2B through the same step (labels [labels, null]; the naive sampler's full forward pass and the
cached sampler's IncrementalState alike), both receive the code drawn for their grid, and the two
halves are mixed before the draw. So guidance costs one step of twice the batch, not two steps, and
the guided cached sampler stays exact: it equals the guided naive sampler for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pixelcnn.py imports this module inside GatedPixelCNN.generate
    from lesion_lightning.models.pixelcnn import GatedPixelCNN

from lesion_lightning.utils.precision import ieee_float32

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SamplingOptions:
    """How each code is drawn, the same for every sampler layer: softmax(logits / temperature) after
    classifier-free guidance w (0 = off) and top_k / top_p truncation (None = off)."""

    temperature: float = 1.0
    guidance: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    @property
    def streams(self) -> int:
        """Network rows per grid: 2 when guided ([conditional, "no class"] as one batch), else 1."""
        return 2 if self.guidance else 1


PLAIN = SamplingOptions()


# ------------------------------------------------------------------------------------ helpers
def _check_request(
    model: GatedPixelCNN,
    batch_size: int,
    height: int,
    width: int,
    labels,
    options: SamplingOptions,
) -> torch.Tensor | None:
    """Validate a sampling request; returns the labels of the network's streams ((2B,) when guided)."""
    if not isinstance(options, SamplingOptions):
        raise TypeError(f"sampling: options must be a SamplingOptions, got {type(options).__name__}")
    temperature, guidance = options.temperature, options.guidance
    if not hasattr(model, "check_grid") or not hasattr(model, "layers"):
        raise TypeError(f"sampling: model must be a GatedPixelCNN, got {type(model).__name__}")
    for name, value in (("batch_size", batch_size), ("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"sampling: {name} must be a positive integer, got {value!r}")
    model.check_grid(height, width)
    if not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(
            f"sampling: temperature must be a number > 0 (1.0 = the model's own distribution), got {temperature!r}"
        )
    check_truncation(options.top_k, options.top_p)
    labels = model.check_labels(labels, batch_size)
    check_guidance(model, guidance)
    return stream_labels(model, labels, guidance)


def check_truncation(top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError unless top_k is None or an integer >= 1 and top_p None or in (0, 1]."""
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"sampling: top_k must be an integer >= 1 or null (no truncation), got {top_k!r}")
    if top_p is not None and (
        not isinstance(top_p, int | float) or isinstance(top_p, bool) or not 0 < top_p <= 1
    ):
        raise ValueError(f"sampling: top_p must be a number in (0, 1] or null (no truncation), got {top_p!r}")


def check_guidance(model: GatedPixelCNN, guidance: float) -> None:
    """Raise ValueError unless guidance is a number >= 0 the model can honour (> 0 needs the null label)."""
    if (
        not isinstance(guidance, int | float)
        or isinstance(guidance, bool)
        or not 0 <= guidance < float("inf")
    ):
        raise ValueError(
            f"sampling: guidance must be a finite number >= 0 (0 = no guidance), got {guidance!r}"
        )
    if guidance == 0:
        return
    if model.num_classes == 0:
        raise ValueError(
            f"sampling: guidance={guidance} needs a class-conditional prior, but this one is unconditional "
            "(num_classes=0); use guidance=0"
        )
    if not model.null_class:
        raise ValueError(
            f"sampling: guidance={guidance} needs unconditional logits, but this prior was trained without "
            "condition dropout (no 'no class' label); retrain it with model.cond_dropout=0.1 or use guidance=0"
        )


def stream_labels(model: GatedPixelCNN, labels: torch.Tensor | None, guidance: float) -> torch.Tensor | None:
    """(B,) labels -> the network's labels: the same (B,), or (2B,) = [labels, null label] when guided."""
    if guidance == 0:
        return labels
    return torch.cat([labels, torch.full_like(labels, model.null_label)])


def guide(logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """(2B, K) logits of the [conditional, unconditional] streams -> (B, K) = (1 + w) * cond - w * uncond.

    With guidance 0 the (B, K) logits pass through unchanged.
    """
    if guidance == 0:
        return logits
    cond, uncond = logits.chunk(2)
    return torch.lerp(uncond, cond, 1.0 + guidance)  # uncond + (1 + w) * (cond - uncond)


def truncate(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(B, K) logits with every code outside the top_k / nucleus top_p set at -inf (a new tensor if changed).

    top_k keeps every code whose logit ties the k-th largest; top_p keeps, per row, the most likely codes
    until the mass before the next one reaches p (so always at least the most likely code).
    """
    k = logits.shape[-1]
    if top_k is not None and top_k < k:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, K) probability of the codes ranked above
        drop = torch.zeros_like(mass_before, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(
    logits: torch.Tensor,
    u: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Inverse-CDF draw: (B, K) logits and (B,) uniforms in [0, 1) -> (B,) code indices.

    softmax(logits / T) in float32, truncated to top_k / top_p. Shared by both samplers so equal logits
    and equal uniforms give equal codes.
    """
    scaled = truncate(logits.float() / temperature, top_k, top_p)  # float32 whatever the model dtype
    probs = torch.softmax(scaled, dim=-1)  # (B, K)
    cdf = probs.cumsum_(dim=-1)
    # Target in (0, cdf[-1]]: using 1 - u and scaling by the total (which rounding leaves near, not at,
    # 1) makes "the first code with cdf >= target" always exist and always have nonzero probability.
    target = (1.0 - u).unsqueeze(-1) * cdf[:, -1:]  # (B, 1)
    idx = torch.searchsorted(cdf, target).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)  # only NaN logits could point past the end


def _uniforms(batch_size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(batch_size, generator=generator, device=device)


def _uniform_source(
    uniforms: torch.Tensor | None,
    generator: torch.Generator | None,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device,
) -> Callable[[int, int], torch.Tensor]:
    """(i, j) -> the (B,) uniforms for that position: from `uniforms` (B, H, W) if given, else the generator.

    Both samplers take their draws from here, so for the same seed they consume identical numbers.
    """
    if uniforms is None:
        return lambda i, j: _uniforms(batch_size, generator, device)
    if tuple(uniforms.shape) != (batch_size, height, width):
        raise ValueError(
            f"uniforms must have shape {(batch_size, height, width)}, got {tuple(uniforms.shape)}"
        )
    uniforms = uniforms.to(device=device, dtype=torch.float32)
    return lambda i, j: uniforms[:, i, j]


def _device(model: GatedPixelCNN) -> torch.device:
    return model.embedding.weight.device


# -------------------------------------------------------------------------------------- naive
def naive_step(
    model: GatedPixelCNN,
    grid: torch.Tensor,
    labels: torch.Tensor | None,
    i: int,
    j: int,
    u: torch.Tensor,
    options: SamplingOptions = PLAIN,
) -> torch.Tensor:
    """One naive position: a full forward pass over the whole grid, keep the logits at (i, j), draw.

    ``labels`` are the network's stream labels (``stream_labels``): (2B,) when guided, and then the
    (B, H, W) grid runs twice, as one batch.
    """
    grids = grid if options.streams == 1 else torch.cat([grid, grid])  # (streams * B, H, W)
    x = model.embedding(grids).permute(0, 3, 1, 2)  # (B', H, W) -> (B', C, H, W)
    logits = model.logits_from_embeddings(x, labels)[:, :, i, j]  # (B', K)
    return draw(guide(logits, options.guidance), u, options.temperature, options.top_k, options.top_p)


@ieee_float32()  # logits in IEEE float32 whatever the global TF32 setting
@torch.no_grad()
def sample_naive(
    model: GatedPixelCNN,
    batch_size: int,
    height: int,
    width: int,
    labels: torch.Tensor | None = None,
    options: SamplingOptions = PLAIN,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference sampler: H*W full forward passes. Exact but O((HW)^2); use for checks only."""
    labels = _check_request(model, batch_size, height, width, labels, options)
    device = _device(model)
    u_at = _uniform_source(uniforms, generator, batch_size, height, width, device)
    grid = torch.zeros(batch_size, height, width, dtype=torch.long, device=device)
    for i in range(height):
        for j in range(width):
            grid[:, i, j] = naive_step(model, grid, labels, i, j, u_at(i, j), options)
        if progress is not None:
            progress(i + 1, height)
    return grid


# ------------------------------------------------------------------------------------- cached
class IncrementalState:
    """Caches and reshaped weights for evaluating a GatedPixelCNN one position at a time.

    Usage, in raster order: for each row, ``logits_at(j)`` then ``commit(j, codes)`` for every
    column, then ``finish_row()`` (skip it after the last row). Everything is allocated here,
    once; the per-position methods only write into these buffers.
    """

    @torch.no_grad()
    def __init__(
        self, model: GatedPixelCNN, batch_size: int, height: int, width: int, labels: torch.Tensor | None
    ) -> None:
        model.check_grid(height, width)
        B, W = batch_size, width
        C, L, K = model.channels, model.num_layers, model.num_codes
        p = model.kernel_size // 2
        self.B, self.W, self.C, self.L, self.p = B, W, C, L, p
        w0 = model.embedding.weight
        dev, dt = w0.device, w0.dtype
        zeros = dict(device=dev, dtype=dt)
        layers = list(model.layers)

        def mat(conv: torch.nn.Conv2d) -> torch.Tensor:  # 1x1 conv weight (out, in, 1, 1) -> (in, out)
            return conv.weight[:, :, 0, 0].t().contiguous()

        # --- weights, reshaped once
        self.emb = w0.detach()
        # h_conv weight (2C, C, 1, p+1) -> (p+1, C, 2C) -> ((p+1)*C, 2C): rows ordered (tap, channel),
        # the layout of a flattened window of the (B, W, C) row buffer.
        self.h_w = [
            ly.h_conv.weight[:, :, 0, :].permute(2, 1, 0).reshape((p + 1) * C, 2 * C).contiguous()
            for ly in layers
        ]
        self.v_w = [ly.v_conv.weight.detach() for ly in layers]
        self.v_b = [ly.v_conv.bias.detach() for ly in layers]
        self.v2h_w = [mat(ly.v_to_h) for ly in layers]
        self.res_w = [mat(ly.h_res) for ly in layers[:-1]]
        self.res_b = [ly.h_res.bias.detach() for ly in layers[:-1]]
        self.skip_w = torch.cat([mat(ly.skip) for ly in layers], dim=0)  # (L*C, C)
        self.skip_b = torch.stack([ly.skip.bias for ly in layers]).sum(0)  # (C,)
        self.head_w1, self.head_b1 = mat(model.head[1]), model.head[1].bias.detach()
        self.head_w2, self.head_b2 = mat(model.head[3]), model.head[3].bias.detach()

        # Class embeddings (B, 2C) per layer; the vertical gate adds them per row, the horizontal
        # one gets them through the row term.
        if labels is not None:
            self.cond = [ly.cond(labels) for ly in layers]
        else:
            self.cond = [torch.zeros(B, 2 * C, **zeros) for _ in layers]
        # Constant part of the horizontal pre-activation: both biases + class embedding, (B, 1, 2C).
        self.row_bias = [
            (ly.h_conv.bias + ly.v_to_h.bias + c)[:, None, :] for ly, c in zip(layers, self.cond, strict=True)
        ]

        # Position terms, transposed once: rows (H, 2C) per layer, columns (W, 2C) for the row terms and
        # (2C, W) for the vertical gate. None without position embedding.
        self.row = 0  # the row being sampled
        if model.position_embedding:
            self.pos_row = [ly.pos_row.detach().t().contiguous() for ly in layers]
            self.pos_col_h = [ly.pos_col.detach().t().contiguous() for ly in layers]
            self.pos_col_v = [ly.pos_col.detach() for ly in layers]
        else:
            self.pos_row = self.pos_col_h = self.pos_col_v = None

        # --- caches
        # Horizontal inputs of the current row. Layer 0 (mask A) reads columns j-p-1..j-1, so it has
        # p+1 zero columns on the left; later layers read j-p..j and have p. Either way the window for
        # column j is buffer[:, j:j+p+1].
        self.h_buf = [torch.zeros(B, W + (p + 1 if li == 0 else p), C, **zeros) for li in range(L)]
        # Vertical inputs: the last p+1 rows, channels first for conv2d, p zero columns each side.
        self.v_ring = [torch.zeros(B, C, p + 1, W + 2 * p, **zeros) for _ in range(L)]
        # Row term for the current row; row 0 sees the zero row that the shift brings in, so only
        # the biases remain there.
        self.row_term = [rb.expand(B, W, 2 * C).clone() for rb in self.row_bias]
        self._add_position(0)
        self.pre = torch.empty(B, 2 * C, **zeros)
        self.t = torch.empty(B, C, **zeros)
        self.s = torch.empty(B, C, **zeros)
        self.g_all = torch.empty(B, L * C, **zeros)  # gate outputs of every layer, for the fused skip
        self.skip = torch.empty(B, C, **zeros)
        self.hidden = torch.empty(B, model.out_hidden, **zeros)
        self.logits = torch.empty(B, K, **zeros)

        # Per-position views, built once per call so the hot loop does no slicing.
        self.win = [[buf[:, j : j + p + 1].view(B, (p + 1) * C) for j in range(W)] for buf in self.h_buf]
        self.rt = [[rt[:, j] for j in range(W)] for rt in self.row_term]
        # Where layer l writes its output h for column j: the next layer's buffer at column j.
        self.h_out = [[self.h_buf[li + 1][:, j + p] for j in range(W)] for li in range(L - 1)]
        self.emb_dst = [self.h_buf[0][:, j + p + 1] for j in range(W)]
        self.g = [self.g_all[:, li * C : (li + 1) * C] for li in range(L)]
        self.pre_a, self.pre_b = self.pre[:, :C], self.pre[:, C:]

    def _add_position(self, r: int) -> None:
        """Fold the position term of row r (row[r] + col, (W, 2C)) into every layer's row term."""
        if self.pos_row is None or r >= self.pos_row[0].shape[0]:  # past the last row: nothing to prepare
            return
        for rt, row, col in zip(self.row_term, self.pos_row, self.pos_col_h, strict=True):
            rt.add_(col).add_(row[r])  # (B, W, 2C) + (W, 2C) + (2C,)

    def logits_at(self, j: int) -> torch.Tensor:
        """Logits (B, K) at column j of the current row; valid until the next call."""
        last = self.L - 1
        for li in range(self.L):
            torch.addmm(self.rt[li][j], self.win[li][j], self.h_w[li], out=self.pre)
            g = self.g[li]
            torch.tanh(self.pre_a, out=self.t)
            torch.sigmoid(self.pre_b, out=self.s)
            torch.mul(self.t, self.s, out=g)
            if li < last:
                dst = self.h_out[li][j]
                torch.addmm(self.res_b[li], g, self.res_w[li], out=dst)
                if li > 0:  # residual; layer 0's input is the code being predicted, no residual there
                    dst.add_(self.h_out[li - 1][j])
        torch.addmm(self.skip_b, self.g_all, self.skip_w, out=self.skip)
        self.skip.relu_()
        torch.addmm(self.head_b1, self.skip, self.head_w1, out=self.hidden)
        self.hidden.relu_()
        return torch.addmm(self.head_b2, self.hidden, self.head_w2, out=self.logits)

    def commit(self, j: int, codes: torch.Tensor) -> None:
        """Record the (B,) codes chosen at column j: they are layer 0's horizontal input from j+1 on."""
        self.emb_dst[j].copy_(self.emb[codes])

    def finish_row(self) -> None:
        """The current row is complete: run the vertical stack on it and prepare the next row's row terms."""
        p, W, r = self.p, self.W, self.row
        v_in = self.h_buf[0][:, p + 1 :].transpose(1, 2)  # the row's code embeddings, (B, W, C) -> (B, C, W)
        for li in range(self.L):
            ring = self.v_ring[li]
            ring[:, :, :p].copy_(ring[:, :, 1:].clone())  # drop the oldest row
            ring[:, :, p, p : p + W].copy_(v_in)
            v_pre = F.conv2d(ring, self.v_w[li], self.v_b[li])[:, :, 0]  # (B, 2C, W)
            # The shift down: this row's pre-activation feeds the horizontal stack of the next row.
            torch.matmul(v_pre.transpose(1, 2), self.v2h_w[li], out=self.row_term[li])  # (B, W, 2C)
            self.row_term[li].add_(self.row_bias[li])
            if li < self.L - 1:
                v_pre = v_pre + self.cond[li][:, :, None]  # (B, 2C, W) + (B, 2C, 1)
                if self.pos_row is not None:  # + col (2C, W) + row[r] (2C, 1)
                    v_pre = v_pre + (self.pos_col_v[li] + self.pos_row[li][r][:, None])
                v_in = torch.tanh(v_pre[:, : self.C]) * torch.sigmoid(v_pre[:, self.C :])  # (B, C, W)
        self.row = r + 1
        self._add_position(self.row)


def _cached_run(
    model: GatedPixelCNN,
    batch_size: int,
    height: int,
    width: int,
    labels: torch.Tensor | None,
    choose: Callable[[int, int, torch.Tensor], torch.Tensor],
    progress: ProgressFn | None,
    streams: int = 1,
) -> torch.Tensor:
    """Drive IncrementalState in raster order; ``choose(i, j, logits)`` returns the (B,) codes at (i, j).

    ``streams`` = 2 for guidance: the state runs 2B rows ([conditional, unconditional] labels), choose
    gets their (2B, K) logits, and the code chosen for grid b goes into both of its streams.
    """
    state = IncrementalState(model, streams * batch_size, height, width, labels)
    grid = torch.empty(batch_size, height, width, dtype=torch.long, device=_device(model))
    for i in range(height):
        row = grid[:, i]
        for j in range(width):
            codes = choose(i, j, state.logits_at(j))
            row[:, j] = codes
            state.commit(j, codes if streams == 1 else codes.repeat(streams))
        if i < height - 1:
            state.finish_row()
        if progress is not None:
            progress(i + 1, height)
    return grid


@ieee_float32()  # logits in IEEE float32 whatever the global TF32 setting
@torch.no_grad()
def sample_cached(
    model: GatedPixelCNN,
    batch_size: int,
    height: int,
    width: int,
    labels: torch.Tensor | None = None,
    options: SamplingOptions = PLAIN,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast exact sampler: cached activations, one network column per position. Returns (B, H, W) long."""
    labels = _check_request(model, batch_size, height, width, labels, options)
    u_at = _uniform_source(uniforms, generator, batch_size, height, width, _device(model))

    def choose(i: int, j: int, logits: torch.Tensor) -> torch.Tensor:
        return draw(
            guide(logits, options.guidance), u_at(i, j), options.temperature, options.top_k, options.top_p
        )

    # inference_mode trims per-op bookkeeping; clone outside it so callers get an ordinary tensor.
    with torch.inference_mode():
        grid = _cached_run(
            model, batch_size, height, width, labels, choose, progress, streams=options.streams
        )
    return grid.clone()


@ieee_float32()  # logits in IEEE float32 whatever the global TF32 setting
@torch.no_grad()
def cached_logits_for_grid(
    model: GatedPixelCNN, indices: torch.Tensor, labels: torch.Tensor | None = None, guidance: float = 0.0
) -> torch.Tensor:
    """Teacher-forced run of the cached machinery over a given grid: (B, H, W) -> (B, K, H, W) logits.

    Must equal model(indices, labels) (with guidance: the guided mix of the conditional and "no class"
    forward passes); this is how the tests check the sampler's exactness.
    """
    model.check_indices(indices)
    B, H, W = indices.shape
    model.check_grid(H, W)
    labels = model.check_labels(labels, B)
    check_guidance(model, guidance)
    labels = stream_labels(model, labels, guidance)
    out = torch.empty(B, model.num_codes, H, W, device=indices.device, dtype=model.embedding.weight.dtype)

    def choose(i: int, j: int, logits: torch.Tensor) -> torch.Tensor:
        out[:, :, i, j] = guide(logits, guidance)
        return indices[:, i, j]

    _cached_run(model, B, H, W, labels, choose, None, streams=2 if guidance else 1)
    return out


SAMPLERS = {"naive": sample_naive, "cached": sample_cached}


def sample(
    model: GatedPixelCNN,
    batch_size: int,
    height: int,
    width: int,
    labels: torch.Tensor | None = None,
    options: SamplingOptions = PLAIN,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    method: str = "cached",
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample (B, H, W) code grids with ``method`` = "cached" (default, fast) or "naive" (reference).

    ``uniforms`` (B, H, W) in [0, 1), if given, replaces the generator's draws: one stream per grid,
    so a grid does not depend on which batch it was sampled in. ``options``: temperature,
    classifier-free guidance (needs a prior trained with model.cond_dropout > 0) and truncation.
    """
    if method not in SAMPLERS:
        raise ValueError(f"sampling: unknown method {method!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[method](
        model,
        batch_size,
        height,
        width,
        labels=labels,
        options=options,
        generator=generator,
        progress=progress,
        uniforms=uniforms,
    )


# ------------------------------------------------------------------------------- memory model
MAX_AUTO_BATCH = 256


def bytes_per_grid(model: GatedPixelCNN, height: int, width: int, streams: int = 1) -> int:
    """Memory the cached sampler holds per requested grid: per stream (2 with guidance: the conditional
    and the "no class" rows run as one batch of 2B) a few rows of activations per layer plus one
    position's logits, and once per grid the code grid itself (long) and its uniforms."""
    per_stream = (
        model.num_layers * (model.kernel_size // 2 + 4) * width * 4 * model.channels + 4 * model.num_codes
    )
    return 4 * (streams * per_stream + 2 * height * width)


def auto_batch_size(
    model: GatedPixelCNN,
    height: int,
    width: int,
    num_samples: int,
    device: torch.device,
    options: SamplingOptions = PLAIN,
    budget: int | None = None,
) -> int:
    """As many grids per sampling batch as the memory budget allows (bigger batches amortise each step).

    Budget (bytes): half the free GPU memory, or a quarter of the free RAM (at most 8 GiB) on CPU.
    Guidance (w > 0) doubles the streams, so it halves the batch.
    """
    per_grid = bytes_per_grid(model, height, width, streams=options.streams)
    if budget is None:
        budget = memory_budget(device)
    return int(max(1, min(num_samples, MAX_AUTO_BATCH, budget // per_grid)))


def memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        avail = 4 << 30
    return min(avail // 4, 8 << 30)
