"""Vector quantizer for the VQ-VAE (van den Oord et al., 2017), in the style of lucidrains/vector-quantize-pytorch.

Each latent vector z_e (one per grid cell) is replaced by its nearest codebook vector e. The loss is

    loss = ||sg[z_e] - e||^2  +  beta * ||z_e - sg[e]||^2        (codebook term + beta * commitment term)

with mean-squared errors and straight-through gradients (the decoder's gradient is copied onto z_e).
Beta multiplies the *commitment* term: it limits how hard the encoder is pulled towards the codes.

Options (all off by default):
- ``ema``: the codebook is a buffer updated by exponential moving averages of the assigned encoder outputs
  (Laplace-smoothed counts); the codebook term is then dropped from the loss.
- ``dead_code_threshold > 0``: codes whose moving-average usage (``cluster_size``: vectors assigned per
  global batch, averaged with ``ema_decay`` in both modes) falls below the threshold (typically 1-2) are
  replaced by randomly chosen encoder outputs of the current batch. The optimizer's state (Adam moments) of a
  restarted code is not reset, as in lucidrains.
- ``kmeans_init``: the first training batch initialises the codebook by k-means (k-means++
  seeding, then a few Lloyd iterations) over its encoder outputs.

All codebook state is in buffers (``cluster_size``, ``embed_avg``, ``initted``), so it is checkpointed.
Under DDP (torch.distributed initialised with world size > 1) per-batch counts and sums are all-reduced and
re-initialised codes are broadcast from rank 0, so every rank keeps an identical codebook.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lesion_lightning.utils.precision import ieee_float32

# Upper bound on the elements of one (chunk, K) distance matrix: 2**25 float32 = 128 MiB. A 128x128 grid with
# batch 32 and K=512 would otherwise need a 1 GiB distance matrix at once.
_MAX_DISTANCE_ELEMENTS = 2**25


class QuantizerOutput(NamedTuple):
    quantized: Tensor  # (B, D, H, W) codebook vectors with straight-through gradient to z, dtype of z
    indices: Tensor  # (B, H, W) long
    loss: Tensor  # scalar: codebook_loss + beta * commitment_loss
    codebook_loss: Tensor  # scalar ||sg[z] - e||^2 (a zero tensor in EMA mode)
    commitment_loss: Tensor  # scalar ||z - sg[e]||^2 (not yet multiplied by beta)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _broadcast_from_rank0(*tensors: Tensor) -> None:
    if _distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


@ieee_float32()  # a TF32 matmul (set_float32_matmul_precision('high'), cuDNN defaults) flips near ties
def _nearest_code(flat: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codebook row for each row of ``flat`` (both float32). (N, D), (K, D) -> (N,).

    Squared distance ||z||^2 - 2 z.e + ||e||^2 without materialising (N, K, D); ||z||^2 is the same for every
    code, so it is left out of the argmin (adding it only costs float32 precision).
    """
    codebook_sq = codebook.pow(2).sum(dim=1)  # (K,)
    chunk = max(1, _MAX_DISTANCE_ELEMENTS // codebook.shape[0])
    indices = []
    for part in flat.split(chunk):
        distances = torch.addmm(codebook_sq, part, codebook.t(), beta=1.0, alpha=-2.0)  # (n, K)
        indices.append(distances.argmin(dim=1))
    return torch.cat(indices)


def _sample_rows(samples: Tensor, num: int) -> Tensor:
    """``num`` random rows of ``samples`` (N, D): without replacement when there are enough rows."""
    n = samples.shape[0]
    if n >= num:
        rows = torch.randperm(n, device=samples.device)[:num]
    else:
        rows = torch.randint(0, n, (num,), device=samples.device)
    return samples[rows]


def _kmeans_plus_plus(samples: Tensor, num_clusters: int) -> Tensor:
    """k-means++ seeding: each new centre is drawn with probability proportional to its squared distance from
    the centres so far. Seeding from uniformly drawn samples often puts two centres in one cluster and none in
    another, which Lloyd's iterations do not repair."""
    n = samples.shape[0]
    centres = samples.new_empty(num_clusters, samples.shape[1])
    centres[0] = samples[torch.randint(0, n, (1,), device=samples.device)]
    min_sq = (samples - centres[0]).pow(2).sum(dim=1)  # (N,) squared distance to the nearest centre so far
    for k in range(1, num_clusters):
        if min_sq.sum() > 0:
            row = torch.multinomial(min_sq, 1)
        else:  # fewer distinct samples than clusters: duplicates are unavoidable
            row = torch.randint(0, n, (1,), device=samples.device)
        centres[k] = samples[row]
        min_sq = torch.minimum(min_sq, (samples - centres[k]).pow(2).sum(dim=1))
    return centres


def kmeans(samples: Tensor, num_clusters: int, iters: int, max_samples: int = 2**17) -> tuple[Tensor, Tensor]:
    """k-means (k-means++ seeding, then ``iters`` Lloyd iterations) on (N, D) float32 samples.

    At most ``max_samples`` random rows are used: plenty for a few hundred centres, and it bounds the cost of
    the one-off init on large grids. Returns (means (K, D), counts (K,) of the final assignment scaled to
    all N samples); empty clusters keep their previous mean.
    """
    total = samples.shape[0]
    if total > max_samples:
        samples = _sample_rows(samples, max_samples)
    means = _kmeans_plus_plus(samples, num_clusters)
    counts = torch.bincount(_nearest_code(samples, means), minlength=num_clusters).to(samples.dtype)
    for _ in range(iters):
        assign = _nearest_code(samples, means)  # (N,)
        counts = torch.bincount(assign, minlength=num_clusters).to(samples.dtype)  # (K,)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)  # (K, D)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1.0)[:, None], means)
    return means, counts * (total / samples.shape[0])


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer over a (K, D) codebook; see the module docstring for the options."""

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        beta: float = 0.25,
        ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        if codebook_size < 1 or code_dim < 1:
            raise ValueError(f"codebook_size and code_dim must be >= 1, got {codebook_size} and {code_dim}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if dead_code_threshold < 0.0:
            raise ValueError(
                f"dead_code_threshold must be >= 0 (0 turns restarts off), got {dead_code_threshold}"
            )
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.ema = ema
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters

        # Same init as lucidrains: kaiming-uniform, i.e. codes of the same scale as unnormalised activations
        # (the uniform(-1/K, 1/K) of some repos starts every code near the origin and invites collapse).
        embed = torch.empty(codebook_size, code_dim)
        nn.init.kaiming_uniform_(embed)
        if ema:
            # Updated by moving averages, not by the optimizer. The state-dict key is "embed" either way.
            self.register_buffer("embed", embed)
            # EMA sums start consistent with the codebook (embed_avg / cluster_size == embed) and with counts of
            # one, not zero: zero counts would divide by ~epsilon on the first updates and throw codes away.
            self.register_buffer("embed_avg", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
        # Moving average of assignments per (global) batch for every code: EMA counts and dead-code usage.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        # False until the k-means init has run; a buffer so a resumed run does not initialise again.
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    @property
    def codebook(self) -> Tensor:
        """The live (K, D) codebook (a Parameter, or a buffer in EMA mode); ``.detach().clone()`` to snapshot."""
        return self.embed

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}, "
            f"dead_code_threshold={self.dead_code_threshold}, kmeans_init={self.kmeans_init}"
        )

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """Codebook vectors for a grid of indices: (B, H, W) long -> (B, D, H, W) in the codebook's dtype."""
        if indices.dim() != 3:
            raise ValueError(f"indices must have shape (B, H, W), got {tuple(indices.shape)}")
        return F.embedding(indices.long(), self.embed).permute(0, 3, 1, 2).contiguous()

    def _check_input(self, z: Tensor) -> None:
        if z.dim() != 4 or z.shape[1] != self.code_dim:
            raise ValueError(f"expected z of shape (B, {self.code_dim}, H, W), got {tuple(z.shape)}")

    @torch.no_grad()
    def quantize_indices(self, z: Tensor) -> Tensor:
        """Nearest-code indices (B, H, W) for z (B, D, H, W). Pure: never updates or initialises the codebook."""
        self._check_input(z)
        b, _, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            # (B, D, H, W) -> (BHW, D)
            flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, self.code_dim)
            return _nearest_code(flat, self.embed.detach().float()).view(b, h, w)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize z (B, D, H, W). In training mode this also runs the k-means init, EMA and dead-code updates."""
        self._check_input(z)
        b, _, h, w = z.shape
        # Search and losses in float32 outside autocast: argmin over bf16 distances picks wrong codes.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z32 = z.float()
            flat = z32.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (B, D, H, W) -> (BHW, D)

            if self.training and self.kmeans_init and not bool(self.initted):
                self._init_with_kmeans(flat)

            indices = _nearest_code(flat, self.embed.detach().float())  # (BHW,)
            # F.embedding keeps the gradient to the codebook (codebook term) without saving its values.
            codes = F.embedding(indices, self.embed.float())  # (BHW, D)
            codes = codes.view(b, h, w, self.code_dim).permute(0, 3, 1, 2)  # -> (B, D, H, W)

            commitment_loss = F.mse_loss(z32, codes.detach())
            if self.ema:
                codebook_loss = torch.zeros((), device=z.device)
            else:
                codebook_loss = F.mse_loss(codes, z32.detach())
            loss = codebook_loss + self.beta * commitment_loss

            # Straight-through: forward value is exactly the code (z - z.detach() is exactly 0, unlike
            # z + (e - z).detach() which rounds), backward copies the gradient onto z unchanged.
            quantized = codes.detach() + (z32 - z32.detach())

            if self.training:
                self._update_codebook(flat, indices)

        return QuantizerOutput(
            quantized=quantized.to(z.dtype).contiguous(),
            indices=indices.view(b, h, w),
            loss=loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
        )

    # --- training-time state updates (no autograd) -------------------------------------------------------

    @torch.no_grad()
    def _init_with_kmeans(self, flat: Tensor) -> None:
        means, counts = kmeans(flat, self.codebook_size, self.kmeans_iters)
        world = dist.get_world_size() if _distributed() else 1
        # Rank 0's batch decides; counts scaled to a global batch to match what cluster_size tracks.
        counts = (counts * world).clamp(min=1.0)
        _broadcast_from_rank0(means, counts)
        self.embed.data.copy_(means)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_avg.copy_(means * counts[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, flat: Tensor, indices: Tensor) -> None:
        if not (self.ema or self.dead_code_threshold > 0):
            return  # nothing tracked: no collectives, no work
        # Per-batch counts (K,), summed over ranks so every rank takes the same decisions.
        counts = _all_reduce_sum(torch.bincount(indices, minlength=self.codebook_size).float())
        self.cluster_size.lerp_(counts, 1.0 - self.ema_decay)
        if self.ema:
            sums = _all_reduce_sum(torch.zeros_like(self.embed_avg).index_add_(0, indices, flat))  # (K, D)
            self.embed_avg.lerp_(sums, 1.0 - self.ema_decay)
            # Laplace smoothing keeps the division finite for codes whose average count tends to zero.
            n = self.cluster_size.sum()
            k_eps = self.codebook_size * self.ema_epsilon
            smoothed = (self.cluster_size + self.ema_epsilon) / (n + k_eps) * n
            self.embed.copy_(self.embed_avg / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold  # identical on every rank (all-reduced counts)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        embed = self.embed.data
        embed[dead] = _sample_rows(flat, num_dead).to(embed.dtype)
        # A restarted code gets the threshold as its usage: it survives if it attracts that many vectors per
        # batch. EMA sums are reset to match, so embed_avg / cluster_size is the new code.
        self.cluster_size[dead] = self.dead_code_threshold
        if self.ema:
            self.embed_avg[dead] = embed[dead] * self.dead_code_threshold
            _broadcast_from_rank0(embed, self.embed_avg)
        else:
            _broadcast_from_rank0(embed)
