"""Sweep report: `python -m lesion_lightning.report SWEEP_DIR` -> SWEEP_DIR/report.md + metrics_vs_grid.png.

Finds every `pipeline.json` below SWEEP_DIR (one per grid size; a multirun has one per job folder) and
summarises each run in one table row: reconstruction quality, codebook usage, prior bits/dim and bits
per image against the marginal baseline, FID/KID, and time per stage, each test metric with its 95 %
interval; a generation table gives n, feature extractor, precision/recall and the memorization check
(FIDs from fewer than 2,048 samples are flagged unreliable); then the pictures side by side and a plot
of the metrics against the grid size. Whatever a run lacks (a stage not done, no metrics.json) shows as "—"
with a note saying why; the report never fails on a partial sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.report_ladder import PLOT as LADDER_PLOT
from lesion_lightning.report_ladder import ladder_markdown, plot_ladder
from lesion_lightning.report_utility import PLOT as UTILITY_PLOT
from lesion_lightning.report_utility import plot_utility, read_utility, utility_markdown
from lesion_lightning.utils.io import atomic_write_text, save_figure
from lesion_lightning.utils.plotting import clipped_yerr

PIPELINE = "pipeline.json"
STAGES = ("vqvae", "encode", "pixelcnn", "sample", "evaluate")
# where the pipeline puts each stage's outputs, relative to a run folder
METRICS = Path("evaluate/metrics.json")
RECONSTRUCTIONS = Path("evaluate/reconstructions.png")
MEMORIZATION = Path("evaluate/memorization.png")
SAMPLES_JSON = Path("sample/samples/samples.json")
SAMPLES_GRID = Path("sample/samples/grid.png")
PLOT = "metrics_vs_grid.png"
DASH = "—"


# ------------------------------------------------------------------------------------------------ collecting
def _read_json(path: Path, what: str, notes: list[str]) -> dict | None:
    if not path.is_file():
        notes.append(f"{what} missing ({path.name} not found)")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        notes.append(f"{what} unreadable ({path.name}: {err})")
        return None
    if not isinstance(data, dict):
        notes.append(f"{what} unreadable ({path.name} is not a JSON object)")
        return None
    return data


def _number(section: dict | None, key: str) -> float | None:
    value = (section or {}).get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _interval(section: dict | None, key: str) -> tuple[float, float] | None:
    value = (section or {}).get(f"{key}_ci")
    if isinstance(value, list) and len(value) == 2 and all(_number({"v": v}, "v") is not None for v in value):
        return (float(value[0]), float(value[1]))
    return None


def _grid_value(grid) -> int | None:
    """pipeline.json's grid (64 or [64, 64]) -> its side, for sorting and plotting."""
    if isinstance(grid, int):
        return grid
    if isinstance(grid, list | tuple) and grid and all(isinstance(g, int) for g in grid):
        return int(grid[0])
    return None


def collect_run(pipeline_path: Path) -> dict:
    """Everything the report shows about one run folder; missing values are None, explained in `notes`."""
    run_dir = pipeline_path.parent
    notes: list[str] = []
    pipeline = _read_json(pipeline_path, "pipeline.json", notes) or {}
    grid = pipeline.get("grid")
    stages = pipeline.get("stages") if isinstance(pipeline.get("stages"), dict) else {}
    stage_info = {}
    for stage in STAGES:
        info = stages.get(stage)
        if not isinstance(info, dict):
            stage_info[stage] = {"status": None, "seconds": None}
            notes.append(f"stage `{stage}` not recorded in pipeline.json")
            continue
        status = info.get("status")
        seconds = info.get("seconds")
        stage_info[stage] = {
            "status": status,
            "seconds": float(seconds) if isinstance(seconds, int | float) else None,
        }
        if status != "done":
            error = f": {info['error']}" if info.get("error") else ""
            notes.append(f"stage `{stage}` {status or 'not run'}{error}")

    metrics = (
        _read_json(run_dir / METRICS, "evaluate metrics", notes)
        if stage_info["evaluate"]["status"] == "done"
        else None
    )
    samples = (
        _read_json(run_dir / SAMPLES_JSON, "samples.json", notes)
        if stage_info["sample"]["status"] == "done"
        else None
    )
    recon = (metrics or {}).get("reconstruction") or {}
    prior = (metrics or {}).get("prior") or {}
    generation = (metrics or {}).get("generation") or {}
    memorization = (metrics or {}).get("memorization") or {}
    for name, section in (
        ("reconstruction", recon),
        ("prior", prior),
        ("generation", generation),
        ("memorization", memorization),
    ):
        if metrics is not None and section.get("skipped"):
            notes.append(f"{name} metrics skipped: {section['skipped']}")
    intervals = {
        key: _interval(section, key)
        for section, keys in (
            (recon, ("psnr", "psnr_8bit", "ssim")),
            (prior, ("bits_per_dim", "bits_per_image", "marginal_bits_per_dim", "marginal_bits_per_image")),
            (generation, ("fid", "kid")),
        )
        for key in keys
    }
    memorized = {}
    for space in ("code_space", "feature_space"):
        mem = memorization.get(space) or {}
        memorized[space] = (
            {
                "value": _number(mem, "memorized_fraction"),
                "ci": _interval(mem, "memorized_fraction"),
                "n_generated": mem.get("n_generated"),
                "n_test": mem.get("n_test"),
                "percentile": mem.get("percentile"),
            }
            if _number(mem, "memorized_fraction") is not None
            else None
        )
    per_class = {
        name: stats
        for name, stats in (generation.get("per_class") or {}).items()
        if isinstance(stats, dict) and _number(stats, "fid") is not None
    }
    return {
        "run_dir": run_dir,
        "group": pipeline.get("group"),
        "grid": grid,
        "grid_value": _grid_value(grid),
        "overrides": pipeline.get("overrides") or [],
        "stages": stage_info,
        "psnr": _number(recon, "psnr"),
        "psnr_8bit": _number(recon, "psnr_8bit"),
        # the scale every image metric was computed on (older metrics.json files did not record it)
        "normalization": recon.get("normalization") or generation.get("normalization"),
        "ssim": _number(recon, "ssim"),
        "codebook_usage": _number(recon, "codebook_usage"),
        "perplexity": _number(recon, "perplexity"),
        "bits_per_dim": _number(prior, "bits_per_dim"),
        "marginal_bits_per_dim": _number(prior, "marginal_bits_per_dim"),
        "bits_per_image": _number(prior, "bits_per_image"),
        "marginal_bits_per_image": _number(prior, "marginal_bits_per_image"),
        "fid": _number(generation, "fid"),
        "kid": _number(generation, "kid"),
        "kid_mean": _number(generation, "kid_mean"),
        "kid_std": _number(generation, "kid_std"),
        "precision": _number(generation, "precision"),
        "recall": _number(generation, "recall"),
        "prc_k": generation.get("prc_k"),
        "n_generated": generation.get("n_generated", generation.get("num_generated")),
        "n_real": generation.get("n_real", generation.get("num_real")),
        "feature_extractor": generation.get("feature_extractor"),
        "per_class": per_class,
        "ladder": (metrics or {}).get("ladder") if isinstance((metrics or {}).get("ladder"), dict) else None,
        "intervals": intervals,
        "memorized": memorized,
        "generation_skipped": bool(generation.get("skipped")),
        "seconds_per_image": _number(samples, "seconds_per_image"),
        "reconstructions": run_dir / RECONSTRUCTIONS if (run_dir / RECONSTRUCTIONS).is_file() else None,
        "samples_grid": run_dir / SAMPLES_GRID if (run_dir / SAMPLES_GRID).is_file() else None,
        "memorization_picture": run_dir / MEMORIZATION if (run_dir / MEMORIZATION).is_file() else None,
        "notes": notes,
        **_utility(run_dir, stages),
    }


def _utility(run_dir: Path, stages: dict) -> dict:
    """The downstream-utility results (None and a note when that stage was part of the run but lacks them)."""
    utility, why = read_utility(run_dir)
    return {"utility": utility, "utility_note": why if "utility" in stages else None}


# ------------------------------------------------------------------------------------------------ formatting
def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def _with_ci(value: float | None, interval: tuple[float, float] | None, spec: str) -> str:
    """'27.25 [26.90, 27.61]': the value and its 95 % interval (value alone where none was computed).

    spec "sig": 2 decimals from 1 up, else 3 significant digits (KID, or FID on a stand-in extractor).
    """
    if value is None:
        return DASH

    def fmt(v: float) -> str:
        if spec != "sig":
            return f"{v:{spec}}"
        return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"

    return fmt(value) + (f" [{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "")


def _unreliable(n) -> str:
    """A prefix flagging set metrics from too few samples, so they are never read as a bare number."""
    if not isinstance(n, int):
        return "unreliable (n not recorded): "
    return f"unreliable (n={n} < {RELIABLE_N}): " if n < RELIABLE_N else ""


def _fid_cell(run: dict) -> str:
    if run["fid"] is None:
        return "skipped" if run["generation_skipped"] else DASH
    return _unreliable(run["n_generated"]) + _with_ci(run["fid"], run["intervals"]["fid"], "sig")


def _kid_cell(run: dict) -> str:
    if run["fid"] is None:
        return "skipped" if run["generation_skipped"] else DASH
    if run["kid"] is not None:  # full-set unbiased MMD^2 with its bootstrap interval
        return _unreliable(run["n_generated"]) + _with_ci(run["kid"], run["intervals"]["kid"], "sig")
    # older metrics.json: torchmetrics' subset mean +- std
    return (
        _unreliable(run["n_generated"])
        + _fmt(run["kid_mean"], ".4f")
        + (f" ± {run['kid_std']:.4f}" if run["kid_std"] is not None else "")
    )


def _memorized_cell(mem: dict | None) -> str:
    if mem is None:
        return DASH
    low, high = mem["ci"] or (None, None)
    text = f"{mem['value']:.1%}"
    if low is not None:
        text += f" [{low:.1%}, {high:.1%}]"
    return text + f" of {mem['n_generated']}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _grid_label(grid) -> str:
    if isinstance(grid, int):
        return f"{grid}x{grid}"
    if isinstance(grid, list | tuple) and grid:
        return "x".join(str(g) for g in grid)
    return "?"


def _link(path: Path | None, base: Path, alt: str) -> str:
    if path is None:
        return DASH
    return f"![{alt}]({_rel(path, base)})"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _row(run: dict, base: Path) -> list[str]:
    usage = DASH
    if run["codebook_usage"] is not None:
        usage = f"{run['codebook_usage']:.0%}"
        if run["perplexity"] is not None:
            usage += f" (ppl {run['perplexity']:.1f})"
    ci = run["intervals"]
    stages = run["stages"]
    return [
        _grid_label(run["grid"]),
        f"[{_rel(run['run_dir'], base)}]({_rel(run['run_dir'], base)})",
        run["normalization"] or "not recorded",
        _with_ci(run["psnr"], ci["psnr"], ".2f"),
        _with_ci(run["psnr_8bit"], ci["psnr_8bit"], ".2f"),
        _with_ci(run["ssim"], ci["ssim"], ".3f"),
        usage,
        _with_ci(run["bits_per_dim"], ci["bits_per_dim"], ".3f"),
        _with_ci(run["bits_per_image"], ci["bits_per_image"], ".0f"),
        _with_ci(run["marginal_bits_per_dim"], ci["marginal_bits_per_dim"], ".3f"),
        _with_ci(run["marginal_bits_per_image"], ci["marginal_bits_per_image"], ".0f"),
        _fid_cell(run),
        _kid_cell(run),
        _duration(stages["vqvae"]["seconds"] if stages["vqvae"]["status"] == "done" else None),
        _duration(stages["pixelcnn"]["seconds"] if stages["pixelcnn"]["status"] == "done" else None),
        _fmt(run["seconds_per_image"], ".3g", " s"),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render(runs: list[dict], sweep_dir: Path, base: Path, plot: Path | None) -> str:
    """The report's markdown; links are relative to `base` (the report's folder)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"{len(runs)} run(s) below `{sweep_dir}`, generated {now}. "
        "Metrics on the test split, each followed by its 95 % interval in brackets (bootstrap over test "
        "images; for FID/KID over resampled generated sets). Every image metric is computed on the images "
        "as the models see them, named in the `data.normalization` column: `minmax` stretches each image "
        "to span [0, 1], so its PSNR/SSIM/FID are not comparable with published 8-bit figures; PSNR 8-bit "
        "undoes each image's stretch with its own min/max and compares with the stored 8-bit original "
        "(10·log10(255²/MSE_i)). PSNR is the mean over images of 10·log10(1/MSE_i). Bits/dim is per grid position and not comparable across grid sizes; bits "
        "per image = bits/dim × H × W is (lower is better; the marginal baseline uses only per-position "
        "code frequencies from the train split). FID/KID from fewer than "
        f"{RELIABLE_N} generated images are marked unreliable; n and the feature extractor are in the "
        "generation table.",
        "",
    ]
    header = [
        "grid",
        "run",
        "data.normalization",
        "PSNR (dB)",
        "PSNR 8-bit (dB)",
        "SSIM",
        "codebook usage",
        "prior bits/dim",
        "prior bits/image",
        "marginal bits/dim",
        "marginal bits/image",
        "FID",
        "KID",
        "VQ-VAE train",
        "PixelCNN train",
        "sampling / image",
    ]
    lines += _table(header, [_row(r, base) for r in runs])
    lines += _generation_tables(runs)

    lines += ["", "## Stages", ""]
    stage_rows = []
    for run in runs:
        cells = [_grid_label(run["grid"])]
        for stage in STAGES:
            info = run["stages"][stage]
            if info["status"] == "done":
                cells.append(f"done, {_duration(info['seconds'])}")
            else:
                cells.append(info["status"] or DASH)
        stage_rows.append(cells)
    lines += _table(["grid", *STAGES], stage_rows)

    lines += [
        "",
        "## Pictures",
        "",
        "Reconstructions: test originals (top) above their reconstructions (bottom).",
        "",
    ]
    lines += _table(
        ["grid", "reconstructions", "samples", "closest to training (code space)"],
        [
            [
                _grid_label(r["grid"]),
                _link(r["reconstructions"], base, f"{_grid_label(r['grid'])} reconstructions"),
                _link(r["samples_grid"], base, f"{_grid_label(r['grid'])} samples"),
                _link(r["memorization_picture"], base, f"{_grid_label(r['grid'])} memorization"),
            ]
            for r in runs
        ],
    )
    if plot is not None:
        lines += ["", "## Metrics against grid size", "", f"![metrics vs grid size]({_rel(plot, base)})"]

    lines += ladder_markdown(
        [(_grid_label(r["grid"]), r["ladder"], f"`{_rel(r['run_dir'], base)}`") for r in runs]
    )
    if (base / LADDER_PLOT).is_file() and any(r["ladder"] and r["ladder"].get("rungs") for r in runs):
        lines += ["", f"![FID ladder per grid]({LADDER_PLOT})"]

    lines += _utility_section(runs, base)

    notes = [(r, n) for r in runs for n in r["notes"]]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {_grid_label(r['grid'])} (`{_rel(r['run_dir'], base)}`): {n}" for r, n in notes]
    overrides = [r for r in runs if r["overrides"]]
    if overrides:
        lines += ["", "## Overrides", ""]
        lines += [f"- {_grid_label(r['grid'])}: `{' '.join(map(str, r['overrides']))}`" for r in overrides]
    return "\n".join(lines) + "\n"


def _generation_tables(runs: list[dict]) -> list[str]:
    """n, extractor, precision/recall and memorization per run; FID/KID per class when conditional."""
    lines = [
        "",
        "## Generation",
        "",
        "FID/KID/precision/recall compare the generated set with real test images on the named features; "
        "precision (fidelity) and recall (diversity) use k-nearest-neighbour balls (Kynkäänniemi et al. "
        "2019). Memorized: the share of samples nearer to a training image than the 1st percentile of "
        "real test images' nearest-training distances (about 1 % for a generator that does not copy), "
        "in code space (Hamming distance between code grids) and in feature space.",
        "",
    ]
    rows = []
    for r in runs:
        n = "—" if r["n_generated"] is None else f"{r['n_generated']} / {r['n_real']}"
        rows.append(
            [
                _grid_label(r["grid"]),
                n,
                r["feature_extractor"] or DASH,
                r["normalization"] or "not recorded",
                _fid_cell(r),
                _kid_cell(r),
                _fmt(r["precision"], ".3f") + (f" (k={r['prc_k']})" if r["precision"] is not None else ""),
                _fmt(r["recall"], ".3f"),
                _memorized_cell(r["memorized"]["code_space"]),
                _memorized_cell(r["memorized"]["feature_space"]),
            ]
        )
    lines += _table(
        [
            "grid",
            "n generated / real",
            "feature extractor",
            "data.normalization",
            "FID",
            "KID",
            "precision",
            "recall",
            "memorized (code space)",
            "memorized (features)",
        ],
        rows,
    )
    class_rows = [
        [
            _grid_label(r["grid"]),
            name,
            f"{stats.get('n_generated')} / {stats.get('n_real')}",
            _unreliable(stats.get("n_generated")) + _with_ci(stats["fid"], _interval(stats, "fid"), "sig"),
            _unreliable(stats.get("n_generated"))
            + _with_ci(_number(stats, "kid"), _interval(stats, "kid"), "sig"),
            _fmt(_number(stats, "precision"), ".3f"),
            _fmt(_number(stats, "recall"), ".3f"),
        ]
        for r in runs
        for name, stats in r["per_class"].items()
    ]
    if class_rows:
        lines += [
            "",
            "### Per class",
            "",
            "Each class's samples against the real test images of that class.",
            "",
        ]
        lines += _table(
            ["grid", "class", "n generated / real", "FID", "KID", "precision", "recall"], class_rows
        )
    return lines


def _utility_section(runs: list[dict], base: Path) -> list[str]:
    """Downstream utility: one table per grid (arms x metrics with intervals), then the bar plot."""
    shown = [r for r in runs if r["utility"] is not None or r["utility_note"]]
    if not shown:
        return []
    lines = ["", "## Downstream utility: do the generated lesions help?", ""]
    for run in shown:
        lines += [f"### {_grid_label(run['grid'])} (`{_rel(run['run_dir'], base)}`)", ""]
        lines += utility_markdown(run["utility"]) if run["utility"] else [run["utility_note"]]
        lines.append("")
    if any(r["utility"] for r in shown) and (base / UTILITY_PLOT).is_file():
        lines += [f"![downstream utility]({UTILITY_PLOT})"]
    return lines


# ------------------------------------------------------------------------------------------------------ plot
def plot_metrics(runs: list[dict], path: Path) -> Path:
    """PSNR, bits/dim, bits per image (prior and marginal baseline), FID and the memorized fraction
    against the grid size, with 95 % intervals as error bars, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r["grid_value"] is not None]
    grids = sorted({r["grid_value"] for r in runs})
    extractors = sorted(
        {r["feature_extractor"] for r in runs if r["fid"] is not None and r["feature_extractor"]}
    )
    n_gen = sorted(
        {r["n_generated"] for r in runs if r["fid"] is not None and isinstance(r["n_generated"], int)}
    )
    fid_note = ""
    if extractors or n_gen:
        fid_note = (
            f"\n{', '.join(e.rsplit('.', 1)[-1] for e in extractors)}; n gen={','.join(map(str, n_gen))}"
        )
        if any(n < RELIABLE_N for n in n_gen):
            fid_note += f" (<{RELIABLE_N}: unreliable)"
    norms = sorted({str(r["normalization"]) for r in runs if r["normalization"]})
    panels = [
        (
            f"reconstruction PSNR (dB, per-image mean)\nnormalization={','.join(norms) or 'not recorded'}",
            [("psnr", "VQ-VAE", "-o"), ("psnr_8bit", "VQ-VAE, 8-bit scale", "--s")],
        ),
        (
            "prior bits/dim (test)",
            [("bits_per_dim", "PixelCNN", "-o"), ("marginal_bits_per_dim", "marginal baseline", "--s")],
        ),
        (
            "prior bits per image (test)",
            [("bits_per_image", "PixelCNN", "-o"), ("marginal_bits_per_image", "marginal baseline", "--s")],
        ),
        ("FID (test)" + fid_note, [("fid", "samples vs test", "-o")]),
        (
            "memorized fraction of samples",
            [("memorized:code_space", "code space", "-o"), ("memorized:feature_space", "features", "--s")],
        ),
    ]

    def point(run: dict, key: str) -> tuple[float | None, tuple[float, float] | None]:
        if key.startswith("memorized:"):
            mem = run["memorized"][key.split(":", 1)[1]]
            return (mem["value"], mem["ci"]) if mem else (None, None)
        return run[key], run["intervals"].get(key)

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, series) in zip(axes, panels, strict=True):
        drawn = False
        for key, label, style in series:
            points = sorted((r["grid_value"], *point(r, key)) for r in runs if point(r, key)[0] is not None)
            if points:
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                err = clipped_yerr(ys, [ci for _, _, ci in points])  # an interval may exclude its point
                ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "skipped / no data" if "FID" in title else "no data",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        elif len(series) > 1:
            ax.legend(fontsize=8)
        if grids:
            ax.set_xscale("log", base=2)
            ax.set_xticks(grids, [str(g) for g in grids])
            ax.set_xlim(min(grids) / 1.4, max(grids) * 1.4)
        ax.set_xlabel("latent grid size")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------- API
def find_pipelines(sweep_dir: str | Path) -> list[Path]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    found = sorted(
        p for p in sweep_dir.rglob(PIPELINE) if not any(part.startswith(".") for part in p.parts[-3:])
    )
    if not found:
        raise FileNotFoundError(
            f"no {PIPELINE} below {sweep_dir}: pass the output folder of a "
            "`python -m lesion_lightning.pipeline` run or multirun sweep"
        )
    return found


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    """`collect_run` of every pipeline.json below the sweep folder, by grid size."""
    runs = [collect_run(p) for p in find_pipelines(sweep_dir)]
    runs.sort(key=lambda r: (r["grid_value"] is None, r["grid_value"] or 0, str(r["run_dir"])))
    return runs


def write_report(
    sweep_dir: str | Path, out: str | Path | None = None, runs: list[dict] | None = None
) -> Path:
    """Write `report.md` (default SWEEP_DIR/report.md) and `metrics_vs_grid.png` beside it; return the report.

    `runs` (from `collect_runs`) saves collecting again when the caller already has them."""
    sweep_dir = Path(sweep_dir).resolve()
    runs = collect_runs(sweep_dir) if runs is None else runs
    out = Path(out).resolve() if out else sweep_dir / "report.md"
    plot = plot_metrics(runs, out.parent / PLOT)
    plot_ladder([(r["grid_value"], r["ladder"]) for r in runs], out.parent / LADDER_PLOT)
    plot_utility([(_grid_label(r["grid"]), r["utility"]) for r in runs], out.parent / UTILITY_PLOT)
    atomic_write_text(out, render(runs, sweep_dir, out.parent, plot))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lesion_lightning.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", help="folder holding the pipeline run(s): searched for pipeline.json")
    parser.add_argument("--out", default=None, help="report path (default SWEEP_DIR/report.md)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
