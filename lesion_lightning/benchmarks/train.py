"""Training throughput of each experiment's model: images per second through one optimizer step.

The step is the LightningModule's own `training_step` (same loss code as real training), fed
random batches of the experiment's input shape, so data loading is excluded (see `bench data`).
"""

from __future__ import annotations

import contextlib
import time
import warnings

import hydra
import torch
from hydra import compose
from omegaconf import DictConfig, open_dict

from lesion_lightning.utils.runtime import pick_device

_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _build(experiment: str, cfg: DictConfig, compiled: bool):
    exp_cfg = compose(config_name="train", overrides=[f"experiment={experiment}"])
    model_cfg = exp_cfg.model
    with open_dict(model_cfg):
        for key, value in cfg.pixelcnn_defaults.items():
            if key in model_cfg.net and model_cfg.net[key] is None:
                model_cfg.net[key] = value
        model_cfg.compile = bool(compiled)
        if "channels_last" in model_cfg:
            model_cfg.channels_last = bool(cfg.channels_last)
    module = hydra.utils.instantiate(model_cfg)
    return module, exp_cfg


def _batch(module, exp_cfg: DictConfig, batch_size: int, image_size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    if hasattr(module.net, "latent_shape"):  # VQ-VAE: images in
        return {
            "image": torch.rand(batch_size, 3, image_size, image_size, generator=g).to(device),
            "label": torch.zeros(batch_size, dtype=torch.long, device=device),
        }
    height, width = module.net.grid_size  # bench.pixelcnn_defaults.grid_size: an index dataset's in training
    k = module.net.num_codes
    return {
        "indices": torch.randint(0, k, (batch_size, height, width), generator=g).to(device),
        "label": torch.zeros(batch_size, dtype=torch.long, device=device),
    }


def _time_steps(module, batch: dict, steps: int, warmup: int, precision: str, device: torch.device) -> float:
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    autocast = (
        torch.autocast(device.type, dtype=_DTYPES[precision])
        if precision in _DTYPES
        else contextlib.nullcontext()
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    module.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = module.training_step(batch, 0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(cfg: DictConfig) -> dict:
    device = pick_device(cfg.device, key="bench.device")
    rows = []
    warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: logging is a no-op
    for experiment in cfg.experiments:
        for compiled in cfg.compile:
            module, exp_cfg = _build(experiment, cfg, compiled)
            module = module.to(device)
            batch = _batch(module, exp_cfg, cfg.batch_size, cfg.image_size, device)
            for precision in cfg.precisions:
                seconds = _time_steps(module, batch, cfg.steps, cfg.warmup, precision, device)
                rows.append(
                    {
                        "experiment": experiment,
                        "precision": precision,
                        "compiled": bool(compiled),
                        "batch": cfg.batch_size,
                        "input": "x".join(map(str, tuple(next(iter(batch.values())).shape[1:]))),
                        "ms_per_step": 1000 * seconds / cfg.steps,
                        "images_per_s": cfg.batch_size * cfg.steps / seconds,
                    }
                )
    ratios = {}
    base = {(r["experiment"], r["compiled"]): r["images_per_s"] for r in rows if r["precision"] == "32-true"}
    for r in rows:
        ref = base.get((r["experiment"], False))
        if ref and (r["precision"] != "32-true" or r["compiled"]):
            ratios[f"{r['experiment']} {r['precision']}{' compiled' if r['compiled'] else ''} vs fp32"] = (
                r["images_per_s"] / ref
            )
    return {"settings": {"device": str(device)}, "rows": rows, "ratios": ratios}
