"""Sampler benchmark: naive (one full forward pass per position) vs cached incremental sampling.

Both samplers are timed on the same model, grid and batch in the same run, so their ratio holds even
on a shared machine. Per-position times are for the whole batch; per-image projections multiply by
H*W positions and divide by the batch size.

- cached: the real ``sample_cached`` on a grid of width g, timed row by row through its progress
  callback (each timed row includes the vertical-stack update it triggers). Per-position cost does
  not depend on the grid height, so a few rows suffice.
- naive: ``sampling.naive_step`` (a full forward pass over the (B, g, g) grid + the draw at one
  position), which is what every naive position costs.

The two are interleaved: after each timed cached row (``max(cached_rows, naive_positions)`` of them,
after ``warmup`` untimed rows and passes) the progress callback times one naive pass, until
``naive_positions`` are done. Both sides see the same load at the same time, and each reports its
median, which shrugs off load spikes from other processes on a shared machine.

A model with ``position_embedding: true`` is built once per grid with ``grid_size`` = that grid (the
embedding ties a model to one grid size); every cached measurement samples a full-height g x g
grid, stopped by the progress callback once enough rows are timed.

Guided vs unguided (``guidance`` w > 0, class-conditional models only, built with the "no class" label):
classifier-free guidance runs the conditional and unconditional streams as one batch of 2B through the
cached step, so its cost should stay near (at most about 2.1x) the unguided step's. Both are timed on
the same model in the same run, alternating (unguided rows, guided rows, twice), each row a complete
cached row as above; ``guided_ratio`` = guided / unguided median ms per position.

Distance to the hardware: every row reports the achieved GFLOP/s of each sampler next to this
machine's float32 matmul peak, measured in the same run by timing a large torch.mm (2 n^3 FLOPs, the
best of a few repeats). The FLOPs are counted analytically from the layer shapes (``step_flops``);
the cached sampler's small (B, C) x (C, 2C) products reach only a fraction of that peak, which says how
much a fused kernel or larger batches could still gain.

Run it through `python -m lesion_lightning.bench sampler`, or directly:
`python -m lesion_lightning.benchmarks.sampler [path/to/sampler.yaml]`.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.models.sampling import SamplingOptions, naive_step, sample_cached
from lesion_lightning.utils.runtime import pick_device

CONFIG = "conf/bench/sampler.yaml"
_MODEL_KEYS = {
    "num_codes",
    "channels",
    "num_layers",
    "kernel_size",
    "num_classes",
    "out_hidden",
    "position_embedding",
}


def step_flops(model: GatedPixelCNN, width: int) -> dict[str, float]:
    """Analytic FLOPs per grid (one stream) of the sampler's work, a multiply-add counted as 2 FLOPs.

    Only the matrix products count; gates, biases, the softmax and the draw are O(C) or O(K) per position
    against O(C^2) and are left out. With C = channels, L = layers, p = kernel_size // 2, k = kernel_size,
    Hd = out_hidden, K = num_codes, W = grid width:

    - cached, per position (``IncrementalState.logits_at``): per layer the horizontal conv as one
      ((p+1)C -> 2C) product, 4(p+1)C^2; the residual 1x1 on all but the last layer, 2C^2; the fused
      skip (LC -> C), 2LC^2; the head, 2C*Hd + 2Hd*K.
      position = L*4(p+1)C^2 + (L-1)*2C^2 + 2LC^2 + 2C*Hd + 2Hd*K
    - cached, per finished row (``finish_row``): per layer the vertical conv ((p+1) x k taps, C -> 2C)
      over W columns, 4(p+1)k*C^2*W, and the v->h 1x1 (2C -> 2C), 8C^2*W.
      row = L*W*(4(p+1)k*C^2 + 8C^2)
      A timed row of the bench costs W*position + row per grid (times 2 with guidance: two streams).
    - naive, per full forward pass over an H x W grid: per position and layer the vertical conv
      4(p+1)k*C^2, horizontal conv 4(p+1)C^2, v->h 8C^2, skip 2C^2, residual 2C^2 (not the last layer),
      plus the head. naive_pass = H*W*(L*(4(p+1)k*C^2 + 4(p+1)C^2 + 12C^2) - 2C^2 + 2C*Hd + 2Hd*K)
    """
    C, L, k, p = model.channels, model.num_layers, model.kernel_size, model.kernel_size // 2
    head = 2 * C * model.out_hidden + 2 * model.out_hidden * model.num_codes
    position = L * 4 * (p + 1) * C * C + (L - 1) * 2 * C * C + 2 * L * C * C + head
    row = L * width * (4 * (p + 1) * k * C * C + 8 * C * C)
    per_position_naive = L * (4 * (p + 1) * k * C * C + 4 * (p + 1) * C * C + 12 * C * C) - 2 * C * C + head
    return {"position": float(position), "row": float(row), "naive_per_position": float(per_position_naive)}


def matmul_peak_gflops(device: torch.device, n: int, repeats: int = 3) -> float:
    """Float32 GFLOP/s of an n x n @ n x n torch.mm on this device (best of `repeats` after a warm-up)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


class _StopSampling(Exception):
    """Raised from the progress callback once enough cached rows are timed."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SystemExit(f"{CONFIG}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _model_specs(cfg: DictConfig) -> list[tuple[str, dict, list[int]]]:
    """[(name, GatedPixelCNN kwargs, grids)]: the reference shape first, then cfg.models."""
    grids = list(cfg.grids)
    if not grids or any(not isinstance(g, int) or g < 1 for g in grids):
        raise SystemExit(f"{CONFIG}: grids must be a non-empty list of positive integers, got {grids!r}")
    reference = OmegaConf.to_container(cfg.reference, resolve=True)
    specs = [("reference", reference, grids)]
    models = cfg.get("models")
    models = OmegaConf.to_container(models, resolve=True) if models is not None else {}
    for name, entry in models.items():
        kwargs = dict(entry)
        model_grids = kwargs.pop("grids", None) or grids
        unknown = set(kwargs) - _MODEL_KEYS
        if unknown:
            raise SystemExit(
                f"{CONFIG}: models.{name} has unknown keys {sorted(unknown)}; allowed: {sorted(_MODEL_KEYS)}"
            )
        if kwargs.get("num_codes") is None:
            kwargs["num_codes"] = reference["num_codes"]
        if kwargs.get("num_classes") is None:
            kwargs["num_classes"] = 0
        specs.append((name, kwargs, list(model_grids)))
    return specs


def _time_pair(
    model: GatedPixelCNN,
    batch: int,
    g: int,
    labels,
    naive_passes: int,
    cached_rows: int,
    warmup: int,
    seed: int,
) -> tuple[float, float]:
    """(naive, cached) seconds per position on a g x g grid: medians of interleaved measurements."""
    device = model.embedding.weight.device
    grid = torch.randint(0, model.num_codes, (batch, g, g), generator=torch.Generator().manual_seed(seed))
    grid = grid.to(device)
    naive_gen = torch.Generator(device=device).manual_seed(seed)

    def naive_pass() -> float:
        u = torch.rand(batch, generator=naive_gen, device=device)
        _sync(device)
        start = time.perf_counter()
        naive_step(model, grid, labels, g // 2, g // 2, u)
        _sync(device)
        return time.perf_counter() - start

    naive_times: list[float] = []
    row_times: list[float] = []
    total_rows = warmup + max(cached_rows, naive_passes)
    row_start = [0.0]

    def progress(done: int, total: int) -> None:
        _sync(device)
        if done > warmup:
            row_times.append(time.perf_counter() - row_start[0])
            if len(naive_times) < naive_passes:
                naive_times.append(naive_pass())
        if done == total_rows:
            raise _StopSampling
        _sync(device)
        row_start[0] = time.perf_counter()

    with torch.inference_mode():
        for _ in range(warmup):
            naive_pass()
    _sync(device)
    row_start[0] = time.perf_counter()
    try:
        # The full g rows (position embedding accepts no other height); stopped after total_rows, so
        # every timed row does its vertical update, as in a full-size grid.
        sampler_gen = torch.Generator(device=device).manual_seed(seed)
        sample_cached(model, batch, g, g, labels=labels, generator=sampler_gen, progress=progress)
    except _StopSampling:
        pass
    return statistics.median(naive_times), statistics.median(row_times) / g


def _cached_row_seconds(
    model: GatedPixelCNN, batch: int, g: int, labels, rows: int, warmup: int, seed: int, guidance: float
) -> list[float]:
    """Seconds of each of `rows` complete cached rows (after `warmup` untimed ones) of a g x g grid."""
    device = model.embedding.weight.device
    times: list[float] = []
    row_start = [0.0]

    def progress(done: int, total: int) -> None:
        _sync(device)
        if done > warmup:
            times.append(time.perf_counter() - row_start[0])
        if done == warmup + rows:
            raise _StopSampling
        row_start[0] = time.perf_counter()

    row_start[0] = time.perf_counter()
    try:
        gen = torch.Generator(device=device).manual_seed(seed)
        sample_cached(
            model,
            batch,
            g,
            g,
            labels=labels,
            options=SamplingOptions(guidance=guidance),
            generator=gen,
            progress=progress,
        )
    except _StopSampling:
        pass
    return times


def _time_guidance(
    model: GatedPixelCNN, batch: int, g: int, labels, rows: int, warmup: int, seed: int, guidance: float
) -> tuple[float, float]:
    """(unguided, guided) seconds per position: medians over two alternating rounds of `rows` rows each."""
    plain: list[float] = []
    guided: list[float] = []
    for _ in range(2):
        plain += _cached_row_seconds(model, batch, g, labels, rows, warmup, seed, 0.0)
        guided += _cached_row_seconds(model, batch, g, labels, rows, warmup, seed, guidance)
    return statistics.median(plain) / g, statistics.median(guided) / g


def run(cfg: DictConfig) -> dict:
    """Time naive vs cached sampling for every model shape and grid; returns settings and rows."""
    device = pick_device(cfg.get("device", "auto"), key=f"{CONFIG}: device")
    if cfg.get("threads") is not None:
        torch.set_num_threads(_positive_int(cfg, "threads"))
    batch = _positive_int(cfg, "batch_size")
    naive_positions = _positive_int(cfg, "naive_positions")
    cached_rows = _positive_int(cfg, "cached_rows")
    warmup = _positive_int(cfg, "warmup", minimum=0)
    seed = int(cfg.get("seed", 0))
    guidance = cfg.get("guidance", 0.0)
    if not isinstance(guidance, int | float) or isinstance(guidance, bool) or guidance < 0:
        raise SystemExit(f"{CONFIG}: guidance must be a number >= 0 (0 = no guided timing), got {guidance!r}")
    peak_n = cfg.get("peak_matmul_size") or (8192 if device.type == "cuda" else 2048)
    specs = _model_specs(cfg)
    # every timed row needs a next row (its vertical update) inside the g-row grid
    needed = warmup + max(cached_rows, naive_positions)
    too_small = sorted({g for _, _, grids in specs for g in grids if g <= needed})
    if too_small:
        raise SystemExit(
            f"{CONFIG}: grids must be > warmup + max(cached_rows, naive_positions) = {needed}, got {too_small}"
        )
    rows = []
    for name, kwargs, grids in specs:
        for g in grids:
            torch.manual_seed(seed)
            try:
                # the "no class" label only adds an embedding row: unguided cost is unchanged
                null_class = bool(guidance) and bool(kwargs.get("num_classes"))
                model = GatedPixelCNN(**kwargs, grid_size=[g, g], null_class=null_class).to(device).eval()
            except (TypeError, ValueError) as err:
                raise SystemExit(f"{CONFIG}: bad model shape for {name!r}: {err}") from err
            classes = model.num_classes
            labels = torch.arange(batch, device=device) % classes if classes else None
            naive_s, cached_s = _time_pair(
                model, batch, g, labels, naive_positions, cached_rows, warmup, seed
            )
            positions = g * g
            flops = step_flops(model, g)
            cached_flops = batch * (flops["position"] + flops["row"] / g)  # per position, whole batch
            row = {
                "model": name,
                "position_embedding": model.position_embedding,
                "grid": g,
                "batch": batch,
                "naive_ms_per_position": 1000 * naive_s,
                "cached_ms_per_position": 1000 * cached_s,
                "speedup": naive_s / cached_s,
                "naive_s_per_image": naive_s * positions / batch,
                "cached_s_per_image": cached_s * positions / batch,
                "naive_gflops": batch * positions * flops["naive_per_position"] / naive_s / 1e9,
                "cached_gflops": cached_flops / cached_s / 1e9,
            }
            if null_class:
                plain_s, guided_s = _time_guidance(
                    model, batch, g, labels, cached_rows, warmup, seed, guidance
                )
                row.update(
                    {
                        "unguided_ms_per_position": 1000 * plain_s,
                        "guided_ms_per_position": 1000 * guided_s,
                        "guided_ratio": guided_s / plain_s,
                        "guided_gflops": 2 * cached_flops / guided_s / 1e9,
                    }
                )
            rows.append(row)
    # the peak last, after the samplers: nothing it leaves in caches or clocks helps them
    peak = matmul_peak_gflops(device, int(peak_n))
    for row in rows:
        row["peak_gflops"] = peak
        for key in ("naive", "cached", "guided"):
            if f"{key}_gflops" in row:
                row[f"{key}_of_peak"] = row[f"{key}_gflops"] / peak
    settings = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "naive_positions": naive_positions,
        "cached_rows": cached_rows,
        "warmup": warmup,
        "seed": seed,
        "dtype": "float32",
        "guidance": guidance,
        "peak": f"float32 torch.mm {peak_n}x{peak_n}, best of 3, in this run",
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
        if device.type == "cuda"
        else None,
        "models": {name: kwargs for name, kwargs, _ in specs},
    }
    return {"settings": settings, "rows": rows}


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else CONFIG)
    result = run(OmegaConf.load(path))
    print(result["settings"])
    for row in result["rows"]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
