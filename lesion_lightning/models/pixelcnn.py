"""Gated PixelCNN prior over grids of VQ-VAE code indices.

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders". Every layer has
two stacks:

- the vertical stack, a (k//2+1) x k convolution padded so that row i sees rows i-k//2..i of its
  input (all columns within k//2). It never feeds itself sideways, so it is causal in rows.
- the horizontal stack, a 1 x (k//2+1) convolution over the current row, columns <= j (the first
  layer, "mask A", sees columns < j only, so the code being predicted is never an input).

The vertical pre-activations reach the horizontal stack through a 1x1 link only after a shift down
one row: the horizontal stack at row i sees vertical features computed from rows < i. That shift
is what removes the blind spot of the masked PixelCNN and keeps the model causal; the gradient
tests in tests/test_pixelcnn.py pin it down.

There is deliberately no normalization layer: any statistic over spatial positions would let
later positions leak into earlier ones and would make incremental sampling inexact.

Optional position conditioning (``position_embedding=True``): convolutions are translation-equivariant
and the receptive field is limited, so on its own the network cannot tell the border of the grid
(dermoscopes' dark circular vignette) from its centre (where the lesion sits). Each layer then adds a
learned term that depends only on the position, row[i] + col[j] (separable, (2C, H) + (2C, W)), to
the pre-activations of both gates, exactly like the class embedding. It reads no data, so causality
is untouched; it ties the model to one grid size (``grid_size``).

Optional "no class" label (``null_class=True``, for classifier-free guidance, Ho & Salimans 2022): one
more row in every class embedding, index ``num_classes``. Training replaces labels with it at random
(PixelCNNModule's ``cond_dropout``), so the same network also gives unconditional logits; the guided
samplers in sampling.py run both label streams as one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # sampling.py imports this module (for its types); generate imports it lazily
    from lesion_lightning.models.sampling import SamplingOptions


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move a (B, C, H, W) map down one row; zeros enter at the top, the last row drops out."""
    return F.pad(x, (0, 0, 1, -1))


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b) over the two channel halves of x: (B, 2C, ...) -> (B, C, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer: vertical stack, horizontal stack, v->h link, residual and skip outputs.

    ``first`` makes it the mask-A layer (horizontal stack excludes the current column, no residual
    from the input since that input is the code being predicted). ``last`` drops the outputs no
    later layer consumes (the vertical gate and the residual 1x1), so no parameter goes unused
    (DDP refuses unused parameters by default).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        first: bool,
        last: bool,
        num_classes: int,
        grid_size: tuple[int, int] | None = None,
        null_class: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.pad = kernel_size // 2
        self.first = first
        self.last = last
        p = self.pad
        self.v_conv = nn.Conv2d(channels, 2 * channels, (p + 1, kernel_size))
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, p + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_res = None if last else nn.Conv2d(channels, channels, 1)
        self.skip = nn.Conv2d(channels, channels, 1)
        # One class embedding per layer, added inside the gates of both stacks (as in the paper).
        # With null_class, row num_classes is the learned "no class" label.
        self.cond = nn.Embedding(num_classes + int(null_class), 2 * channels) if num_classes > 0 else None
        # Position embedding (only with grid_size): one term shared by both gates like the class one,
        # row (2C, H) + column (2C, W). Zero at init, so an untrained model is the plain PixelCNN.
        self.pos_row = self.pos_col = None
        if grid_size is not None:
            self.pos_row = nn.Parameter(torch.zeros(2 * channels, grid_size[0]))
            self.pos_col = nn.Parameter(torch.zeros(2 * channels, grid_size[1]))

    def position_term(self) -> torch.Tensor | None:
        """The learned (2C, H, W) position term, or None without position embedding."""
        if self.pos_row is None:
            return None
        return self.pos_row[:, :, None] + self.pos_col[:, None, :]  # (2C, H, 1) + (2C, 1, W)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(B, C, H, W) vertical and horizontal inputs -> (v_out | None, h_out | None, skip)."""
        p = self.pad
        # Pad top by p (no bottom pad): output row i covers input rows i-p..i.
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))  # (B, 2C, H, W)
        # Mask B: pad left p -> columns j-p..j. Mask A: pad left p+1 and crop one on the right
        # -> columns j-p-1..j-1.
        h_in = F.pad(h, (p + 1, -1)) if self.first else F.pad(h, (p, 0))
        h_pre = self.h_conv(h_in) + self.v_to_h(shift_down(v_pre))  # (B, 2C, H, W)
        if self.cond is not None:
            c = self.cond(labels)[:, :, None, None]  # (B, 2C) -> (B, 2C, 1, 1)
            v_pre = v_pre + c
            h_pre = h_pre + c
        pos = self.position_term()
        if pos is not None:  # (2C, H, W), broadcast over the batch
            v_pre = v_pre + pos
            h_pre = h_pre + pos
        g = gate(h_pre)  # (B, C, H, W)
        skip = self.skip(g)
        if self.last:
            return None, None, skip
        h_out = self.h_res(g) if self.first else h + self.h_res(g)
        return gate(v_pre), h_out, skip


class GatedPixelCNN(nn.Module):
    """Autoregressive prior p(indices | label) over (H, W) grids of ``num_codes`` codes, raster order.

    Built from primitives only so a checkpoint can rebuild it. Works on any grid size (the
    convolutions are padded, nothing assumes H == W), except with ``position_embedding=True``: then
    each layer learns a position term for ``grid_size`` = (H, W), which becomes the only grid size the
    model accepts (forward and sampling raise on another). ``grid_size`` without position embedding is
    only recorded.
    """

    def __init__(
        self,
        num_codes: int,
        channels: int = 64,
        num_layers: int = 15,
        kernel_size: int = 3,
        num_classes: int = 0,
        out_hidden: int | None = None,
        grid_size: tuple[int, int] | list[int] | None = None,
        position_embedding: bool = False,
        null_class: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("num_codes", num_codes, 1),
            ("channels", channels, 1),
            ("num_layers", num_layers, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"GatedPixelCNN: {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f"GatedPixelCNN: kernel_size must be an odd integer >= 3 (e.g. 3, 5, 7), got {kernel_size!r}"
            )
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(
                f"GatedPixelCNN: num_classes must be an integer >= 0 (0 = unconditional), got {num_classes!r}"
            )
        if out_hidden is not None and (not isinstance(out_hidden, int) or out_hidden < 1):
            raise ValueError(
                f"GatedPixelCNN: out_hidden must be a positive integer or None, got {out_hidden!r}"
            )
        if grid_size is not None:
            grid_size = tuple(grid_size) if isinstance(grid_size, list | tuple) else grid_size
            if (
                not isinstance(grid_size, tuple)
                or len(grid_size) != 2
                or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in grid_size)
            ):
                raise ValueError(
                    f"GatedPixelCNN: grid_size must be [height, width] (two positive integers) or None, "
                    f"got {grid_size!r}"
                )
        if not isinstance(position_embedding, bool):
            raise ValueError(
                f"GatedPixelCNN: position_embedding must be true or false, got {position_embedding!r}"
            )
        if not isinstance(null_class, bool):
            raise ValueError(f"GatedPixelCNN: null_class must be true or false, got {null_class!r}")
        if null_class and num_classes == 0:
            raise ValueError(
                "GatedPixelCNN: null_class=True (a 'no class' label for classifier-free guidance) needs a "
                "class-conditional prior (num_classes > 0); this one is unconditional. Set "
                "model.cond_dropout=0 or train on data with more than one class"
            )
        if position_embedding and grid_size is None:
            raise ValueError(
                "GatedPixelCNN: position_embedding=True needs grid_size=[height, width], the code grid the "
                "prior is trained on (model.net.grid_size; data=indices fills it from the index dataset)"
            )
        self.num_codes = num_codes
        self.channels = channels
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.out_hidden = out_hidden if out_hidden is not None else channels
        self.grid_size: tuple[int, int] | None = grid_size
        self.position_embedding = position_embedding
        self.null_class = null_class

        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(
                channels,
                kernel_size,
                first=i == 0,
                last=i == num_layers - 1,
                num_classes=num_classes,
                grid_size=grid_size if position_embedding else None,
                null_class=null_class,
            )
            for i in range(num_layers)
        )
        # Skips of every layer are summed, then ReLU -> 1x1 -> ReLU -> 1x1 to K logits.
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, self.out_hidden, 1),
            nn.ReLU(),
            nn.Conv2d(self.out_hidden, num_codes, 1),
        )

    # ----------------------------------------------------------------------------- validation
    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise ValueError unless indices is an integer (B, H, W) tensor with values in [0, num_codes)."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 3:
            shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise ValueError(
                f"GatedPixelCNN: indices must be a (B, H, W) tensor of code indices, got {shape}"
            )
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"GatedPixelCNN: indices must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() > 0:
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.num_codes:
                raise ValueError(
                    f"GatedPixelCNN: indices must lie in [0, {self.num_codes}) (num_codes={self.num_codes}), "
                    f"got values in [{lo}, {hi}]; check that the index grids come from the VQ-VAE this prior "
                    "was built for"
                )

    def check_grid(self, height: int, width: int) -> None:
        """Raise ValueError if the model has position embeddings for another grid size than height x width."""
        if self.position_embedding and (height, width) != self.grid_size:
            gh, gw = self.grid_size
            raise ValueError(
                f"GatedPixelCNN: this prior's position embedding was built for {gh}x{gw} grids "
                f"(grid_size={[gh, gw]}), got a {height}x{width} grid; use {gh}x{gw} grids (the index "
                "dataset it was trained on) or a model with position_embedding=false"
            )

    @property
    def null_label(self) -> int | None:
        """Index of the learned "no class" label (``num_classes``), or None without ``null_class``."""
        return self.num_classes if self.null_class else None

    def check_labels(self, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """Validate class labels against num_classes (+ the null label); returns a long tensor (or None)."""
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(
                    "GatedPixelCNN: labels were given but the model is unconditional (num_classes=0); "
                    "build it with num_classes > 0 or pass labels=None"
                )
            return None
        if labels is None:
            raise ValueError(
                f"GatedPixelCNN: the model is class-conditional (num_classes={self.num_classes}); "
                "pass labels, a (B,) tensor of class ids"
            )
        labels = torch.as_tensor(labels, device=self.embedding.weight.device)
        if labels.dim() != 1 or labels.shape[0] != batch_size:
            raise ValueError(
                f"GatedPixelCNN: labels must have shape ({batch_size},), got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"GatedPixelCNN: labels must be integer class ids, got dtype {labels.dtype}")
        top = self.num_classes + int(self.null_class)
        if labels.numel() > 0 and (int(labels.min()) < 0 or int(labels.max()) >= top):
            null = f" ({self.num_classes} = the 'no class' label)" if self.null_class else ""
            raise ValueError(
                f"GatedPixelCNN: labels must lie in [0, {top}){null}, "
                f"got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels.long()

    # -------------------------------------------------------------------------------- forward
    def forward(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W) code indices (+ (B,) labels) -> (B, num_codes, H, W) logits of p(x_ij | x_<ij)."""
        self.check_indices(indices)
        labels = self.check_labels(labels, indices.shape[0])
        x = self.embedding(indices).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        return self.logits_from_embeddings(x, labels)

    def logits_from_embeddings(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The network after the code embedding: (B, C, H, W) float -> (B, K, H, W) logits.

        Separate from forward so causality can be checked with gradients w.r.t. a float input.
        Labels are expected validated (forward does it).
        """
        self.check_grid(x.shape[-2], x.shape[-1])
        v, h = x, x
        skips = None
        for layer in self.layers:
            v, h, skip = layer(v, h, labels)
            skips = skip if skips is None else skips + skip
        return self.head(skips)

    # ------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(
        self,
        batch_size: int,
        height: int,
        width: int,
        labels: torch.Tensor | None = None,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
        method: str = "cached",
        uniforms: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample (batch_size, height, width) code grids; `options` a sampling.SamplingOptions (None: plain)."""
        from lesion_lightning.models.sampling import PLAIN, sample

        return sample(
            self,
            batch_size,
            height,
            width,
            labels=labels,
            options=PLAIN if options is None else options,
            generator=generator,
            progress=progress,
            method=method,
            uniforms=uniforms,
        )
