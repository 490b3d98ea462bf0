"""The sweep report's markdown: one table row per run (reconstruction quality, codebook usage, prior
bits/dim and bits per image against the marginal baseline, FID/KID, time per stage, each test metric with
its 95 % interval), a generation table (n, feature extractor, precision/recall, memorization; FIDs from
fewer than 2,048 samples flagged unreliable), the stages, the pictures side by side, the utility tables,
then notes and overrides. Whatever a run lacks shows as "—" with a note saying why.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.metrics.naming import is_inception
from lesion_lightning.report.collect import interval, number
from lesion_lightning.report.curve import utility_report_markdown
from lesion_lightning.report.ladder import PLOT as LADDER_PLOT
from lesion_lightning.report.ladder import ladder_markdown
from lesion_lightning.report.plots import UTILITY_PLOT
from lesion_lightning.report.utility_tables import markdown_table
from lesion_lightning.utils.run_folder import STAGES

DASH = "—"


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


def _unreliable(n_generated, n_real=None, extractor=None) -> str:
    """A prefix flagging set metrics that are not publishable FID: too few images on either side
    (generated or real reference), or features from a stand-in extractor instead of the TF Inception."""
    prefix = f"stand-in {extractor}, not FID: " if extractor and not is_inception(extractor) else ""
    if not isinstance(n_generated, int):
        return prefix + "unreliable (n not recorded): "
    if isinstance(n_real, int) and n_real < min(n_generated, RELIABLE_N):
        return prefix + f"unreliable (n_real={n_real} < {RELIABLE_N}): "
    return prefix + (f"unreliable (n={n_generated} < {RELIABLE_N}): " if n_generated < RELIABLE_N else "")


def _fid_cell(run: dict) -> str:
    if run["fid"] is None:
        return "skipped" if run["generation_skipped"] else DASH
    return _unreliable(run["n_generated"], run["n_real"], run["feature_extractor"]) + _with_ci(
        run["fid"], run["intervals"]["fid"], "sig"
    )


def _kid_cell(run: dict) -> str:
    if run["fid"] is None:
        return "skipped" if run["generation_skipped"] else DASH
    if run["kid"] is not None:  # full-set unbiased MMD^2 with its bootstrap interval
        return _unreliable(run["n_generated"], run["n_real"], run["feature_extractor"]) + _with_ci(
            run["kid"], run["intervals"]["kid"], "sig"
        )
    # older metrics.json: torchmetrics' subset mean +- std
    return (
        _unreliable(run["n_generated"], run["n_real"], run["feature_extractor"])
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


def grid_label(grid) -> str:
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
        grid_label(run["grid"]),
        f"[{_rel(run['run_dir'], base)}]({_rel(run['run_dir'], base)})",
        run["normalization"] or "not recorded",
        _with_ci(run["psnr"], ci["psnr"], ".2f"),
        _with_ci(run["psnr_8bit"], ci["psnr_8bit"], ".2f"),
        _with_ci(run["ssim"], ci["ssim"], ".3f"),
        usage,
        _with_ci(run["bits_per_dim"], ci["bits_per_dim"], ".3f"),
        _fmt(run.get("val_bits_per_dim"), ".3f"),
        _fmt(run.get("gap_bits_per_dim"), "+.3f"),
        _with_ci(run["bits_per_image"], ci["bits_per_image"], ".0f"),
        _with_ci(run["marginal_bits_per_dim"], ci["marginal_bits_per_dim"], ".3f"),
        _with_ci(run["marginal_bits_per_image"], ci["marginal_bits_per_image"], ".0f"),
        _fid_cell(run),
        _kid_cell(run),
        _duration(stages["vqvae"]["seconds"] if stages["vqvae"]["status"] == "done" else None),
        _duration(stages["pixelcnn"]["seconds"] if stages["pixelcnn"]["status"] == "done" else None),
        _fmt(run["seconds_per_image"], ".3g", " s"),
    ]


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
        "code frequencies from the train split). Val bits/dim is that of the prior checkpoint used, at "
        "the validation that selected it; the train-val gap is val minus train bits/dim on as many "
        "un-augmented train grids, scored the same way (eval mode, same weights). FID/KID from fewer than "
        f"{RELIABLE_N} images on either side (generated or real) are marked unreliable, and from a stand-in "
        "extractor named as such; n and the feature extractor are in the "
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
        "val bits/dim (selected ckpt)",
        "train-val gap",
        "prior bits/image",
        "marginal bits/dim",
        "marginal bits/image",
        "FID",
        "KID",
        "VQ-VAE train",
        "PixelCNN train",
        "sampling / image",
    ]
    lines += markdown_table(header, [_row(r, base) for r in runs])
    lines += _generation_tables(runs)

    lines += ["", "## Stages", ""]
    stage_rows = []
    for run in runs:
        cells = [grid_label(run["grid"])]
        for stage in STAGES:
            info = run["stages"][stage]
            if info["status"] == "done":
                cells.append(f"done, {_duration(info['seconds'])}")
            else:
                cells.append(info["status"] or DASH)
        stage_rows.append(cells)
    lines += markdown_table(["grid", *STAGES], stage_rows)

    lines += [
        "",
        "## Pictures",
        "",
        "Reconstructions: test originals (top) above their reconstructions (bottom).",
        "",
    ]
    lines += markdown_table(
        ["grid", "reconstructions", "samples", "closest to training (code space)"],
        [
            [
                grid_label(r["grid"]),
                _link(r["reconstructions"], base, f"{grid_label(r['grid'])} reconstructions"),
                _link(r["samples_grid"], base, f"{grid_label(r['grid'])} samples"),
                _link(r["memorization_picture"], base, f"{grid_label(r['grid'])} memorization"),
            ]
            for r in runs
        ],
    )
    if plot is not None:
        lines += ["", "## Metrics against grid size", "", f"![metrics vs grid size]({_rel(plot, base)})"]

    lines += ladder_markdown(
        [(grid_label(r["grid"]), r["ladder"], f"`{_rel(r['run_dir'], base)}`") for r in runs]
    )
    if (base / LADDER_PLOT).is_file() and any(r["ladder"] and r["ladder"].get("rungs") for r in runs):
        lines += ["", f"![FID ladder per grid]({LADDER_PLOT})"]

    lines += _utility_section(runs, base)

    notes = [(r, n) for r in runs for n in r["notes"]]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {grid_label(r['grid'])} (`{_rel(r['run_dir'], base)}`): {n}" for r, n in notes]
    overrides = [r for r in runs if r["overrides"]]
    if overrides:
        lines += ["", "## Overrides", ""]
        lines += [f"- {grid_label(r['grid'])}: `{' '.join(map(str, r['overrides']))}`" for r in overrides]
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
                grid_label(r["grid"]),
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
    lines += markdown_table(
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
            grid_label(r["grid"]),
            name,
            f"{stats.get('n_generated')} / {stats.get('n_real')}",
            _unreliable(stats.get("n_generated"), stats.get("n_real"), r["feature_extractor"])
            + _with_ci(stats["fid"], interval(stats, "fid"), "sig"),
            _unreliable(stats.get("n_generated"), stats.get("n_real"), r["feature_extractor"])
            + _with_ci(number(stats, "kid"), interval(stats, "kid"), "sig"),
            _fmt(number(stats, "precision"), ".3f"),
            _fmt(number(stats, "recall"), ".3f"),
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
        lines += markdown_table(
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
        lines += [f"### {grid_label(run['grid'])} (`{_rel(run['run_dir'], base)}`)", ""]
        lines += utility_report_markdown(run["utility"]) if run["utility"] else [run["utility_note"]]
        lines.append("")
    if any(r["utility"] for r in shown) and (base / UTILITY_PLOT).is_file():
        lines += [f"![downstream utility]({UTILITY_PLOT})"]
    return lines
