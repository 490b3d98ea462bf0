"""Benchmarks: `python -m lesion_lightning.bench <what> [overrides]` prints a table and writes bench.json.

what = train | data | sampler | guidance | first_stage. Each benchmark measures both sides of its comparison in the same run
and reports their ratio: absolute times on shared machines are noise, ratios are not.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lesion_lightning.utils.io import atomic_write_json

BENCHES = {
    "train": "lesion_lightning.benchmarks.train",
    "data": "lesion_lightning.benchmarks.data",
    "sampler": "lesion_lightning.benchmarks.sampler",
    "guidance": "lesion_lightning.benchmarks.guidance",
    "first_stage": "lesion_lightning.benchmarks.first_stage",
}
log = logging.getLogger(__name__)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for row in rows for k in row))

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        if isinstance(v, list | tuple):  # an interval
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    cells = [[fmt(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def run_bench(name: str, cfg: DictConfig, output_dir: str | Path) -> dict:
    if name not in BENCHES:
        raise SystemExit(f"unknown benchmark {name!r}; choose one of {sorted(BENCHES)}")
    module = importlib.import_module(BENCHES[name])
    result = module.run(cfg.bench)
    report = {
        "benchmark": name,
        "machine": machine_info(),
        "config": OmegaConf.to_container(cfg.bench, resolve=True),
        **result,
    }
    path = atomic_write_json(Path(output_dir) / "bench.json", report)
    print(
        f"\n{name} benchmark on {report['machine']['cpu']} "
        f"({report['machine']['torch_threads']} torch threads, GPU: {report['machine']['gpu']})"
    )
    # a benchmark may print a condensed `table` (its bench.json keeps the full rows)
    print(format_table(result.get("table", result.get("rows", []))))
    for key, value in result.get("ratios", {}).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    for note in result.get("notes", []):
        print(f"- {note}")
    print(f"\nwritten to {path}")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    run_bench(HydraConfig.get().runtime.choices["bench"], cfg, cfg.paths.output_dir)


def _positional_to_override(argv: list[str]) -> list[str]:
    """`bench sampler k=v` -> `bench bench=sampler k=v` (Hydra itself takes only key=value)."""
    if len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        return [argv[0], f"bench={argv[1]}", *argv[2:]]
    return argv


if __name__ == "__main__":
    sys.argv = _positional_to_override(sys.argv)
    main()
