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
from lesion_lightning.models.sampling import naive_step, sample_cached
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
        naive_step(model, grid, labels, g // 2, g // 2, u, 1.0)
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
                model = GatedPixelCNN(**kwargs, grid_size=[g, g]).to(device).eval()
            except (TypeError, ValueError) as err:
                raise SystemExit(f"{CONFIG}: bad model shape for {name!r}: {err}") from err
            classes = model.num_classes
            labels = torch.arange(batch, device=device) % classes if classes else None
            naive_s, cached_s = _time_pair(
                model, batch, g, labels, naive_positions, cached_rows, warmup, seed
            )
            positions = g * g
            rows.append(
                {
                    "model": name,
                    "position_embedding": model.position_embedding,
                    "grid": g,
                    "batch": batch,
                    "naive_ms_per_position": 1000 * naive_s,
                    "cached_ms_per_position": 1000 * cached_s,
                    "speedup": naive_s / cached_s,
                    "naive_s_per_image": naive_s * positions / batch,
                    "cached_s_per_image": cached_s * positions / batch,
                }
            )
    settings = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "naive_positions": naive_positions,
        "cached_rows": cached_rows,
        "warmup": warmup,
        "seed": seed,
        "dtype": "float32",
        "models": {name: kwargs for name, kwargs, _ in specs},
    }
    return {"settings": settings, "rows": rows}


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else CONFIG)
    result = run(OmegaConf.load(path))
    print(result["settings"])
    for row in result["rows"]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
