"""The sampler benchmark's FLOP model matches what torch counts, and its guided/peak columns are filled."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from lesion_lightning.benchmarks.sampler import matmul_peak_gflops, run, step_flops
from lesion_lightning.models.pixelcnn import GatedPixelCNN
from lesion_lightning.models.sampling import IncrementalState


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_step_flops_match_torchs_count() -> None:
    torch.manual_seed(0)
    model = GatedPixelCNN(32, 8, 3, 5, 2, out_hidden=12).eval()
    h, w, b = 4, 6, 2
    flops = step_flops(model, w)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        state = IncrementalState(model, b, h, w, labels)
        assert counted(lambda: state.logits_at(0)) == b * flops["position"]
        assert counted(state.finish_row) == b * flops["row"]
        grid = torch.zeros(b, h, w, dtype=torch.long)
        assert counted(lambda: model(grid, labels)) == b * h * w * flops["naive_per_position"]


def test_bench_reports_guided_ratio_and_peak() -> None:
    cfg = OmegaConf.create(
        {
            "grids": [6],
            "batch_size": 2,
            "reference": {"num_codes": 16, "channels": 8, "num_layers": 2, "kernel_size": 3},
            "models": {"cond": {"num_classes": 2, "channels": 8, "num_layers": 2, "kernel_size": 3}},
            "naive_positions": 1,
            "cached_rows": 2,
            "warmup": 1,
            "guidance": 1.5,
            "peak_matmul_size": 128,
            "device": "cpu",
        }
    )
    result = run(cfg)
    reference, cond = result["rows"]
    assert "guided_ratio" not in reference  # unconditional: nothing to guide
    assert cond["guided_ratio"] > 0 and cond["guided_gflops"] > 0
    for row in result["rows"]:
        assert (
            row["peak_gflops"] > 0 and 0 < row["cached_of_peak"] == row["cached_gflops"] / row["peak_gflops"]
        )
    assert result["settings"]["guidance"] == 1.5 and "torch.mm 128x128" in result["settings"]["peak"]
    assert matmul_peak_gflops(torch.device("cpu"), 64, repeats=1) > 0
