"""Write the sweep report (report.md, metrics_vs_grid.png, utility.png) and, on request, log its table and
pictures as one W&B run in the sweep's group (`job_type=report`, offline without credentials).
`publish_report` is that sequence, run by `python -m lesion_lightning.report` and by the pipeline's Hydra
callback after a multirun.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.report.collect import collect_runs
from lesion_lightning.report.curve import curve_tables, plot_curve
from lesion_lightning.report.ladder import PLOT as LADDER_PLOT
from lesion_lightning.report.ladder import plot_ladder
from lesion_lightning.report.plots import PLOT, UTILITY_PLOT, plot_metrics, plot_utility
from lesion_lightning.report.render import grid_label, render
from lesion_lightning.utils.io import atomic_write_text
from lesion_lightning.utils.wandb_utils import resolve_offline

log = logging.getLogger(__name__)

COLUMNS = (
    "grid",
    "psnr",
    "ssim",
    "codebook_usage",
    "perplexity",
    "bits_per_dim",
    "marginal_bits_per_dim",
    "fid",
    "kid_mean",
    "vqvae_seconds",
    "pixelcnn_seconds",
    "seconds_per_image",
    # what every FID/KID rests on, its interval and the rest of the generation / memorization figures
    "bits_per_image",
    "marginal_bits_per_image",
    "fid_ci_low",
    "fid_ci_high",
    "fid_reliable",
    "n_generated",
    "n_real",
    "feature_extractor",
    "precision",
    "recall",
    "memorized_code_space",
    "memorized_feature_space",
)


def _extra_cells(r: dict) -> list:
    fid_ci = r["intervals"]["fid"] or (None, None)
    n = r["n_generated"]
    memorized = [(r["memorized"][s] or {}).get("value") for s in ("code_space", "feature_space")]
    return [
        r["bits_per_image"],
        r["marginal_bits_per_image"],
        *fid_ci,
        None if r["fid"] is None else isinstance(n, int) and n >= RELIABLE_N,
        n,
        r["n_real"],
        r["feature_extractor"],
        r["precision"],
        r["recall"],
        *memorized,
    ]


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
    entries = [(grid_label(r["grid"]), r["utility"]) for r in runs]
    # the data-budget curve; results from before the curve existed get the bar plot
    plot_curve(entries, out.parent / UTILITY_PLOT) or plot_utility(entries, out.parent / UTILITY_PLOT)
    atomic_write_text(out, render(runs, sweep_dir, out.parent, plot))
    return out


def log_report_to_wandb(
    runs: list[dict],
    sweep_dir: str | Path,
    project: str = "lesion_lightning",
    offline: bool | str = "auto",
    group: str | None = None,
) -> Path:
    """Log already-collected runs (`collect.collect_runs`) as one W&B run; returns its run folder."""
    import wandb

    sweep_dir = Path(sweep_dir).resolve()
    if group is None:  # the group the sweep's stages logged into
        group = next((r["group"] for r in runs if r.get("group")), f"pipeline-{sweep_dir.name}")
    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        name=f"report-{sweep_dir.name}",
        dir=str(sweep_dir),
        mode="offline" if resolve_offline(offline) else "online",
        reinit=True,
    )
    try:
        table = wandb.Table(columns=list(COLUMNS))
        for r in runs:
            stages = r["stages"]
            table.add_data(
                r["grid_value"],
                r["psnr"],
                r["ssim"],
                r["codebook_usage"],
                r["perplexity"],
                r["bits_per_dim"],
                r["marginal_bits_per_dim"],
                r["fid"],
                r["kid_mean"],
                stages["vqvae"]["seconds"],
                stages["pixelcnn"]["seconds"],
                r["seconds_per_image"],
                *_extra_cells(r),
            )
        payload = {"report/table": table}
        if (sweep_dir / PLOT).is_file():
            payload["report/metrics_vs_grid"] = wandb.Image(str(sweep_dir / PLOT))
        if (sweep_dir / LADDER_PLOT).is_file():
            payload["report/fid_ladder"] = wandb.Image(str(sweep_dir / LADDER_PLOT))
        if (sweep_dir / UTILITY_PLOT).is_file():
            payload["report/utility"] = wandb.Image(str(sweep_dir / UTILITY_PLOT))
        for r in runs:
            for key, columns, rows in curve_tables(r["utility"]):
                payload[f"report/utility_curve/grid{r['grid_value']}/{key}"] = wandb.Table(
                    columns=columns, data=rows
                )
        for r in runs:
            for key in ("reconstructions", "samples_grid", "memorization_picture"):
                if r[key] is not None:
                    payload[f"report/{key}/grid{r['grid_value']}"] = wandb.Image(str(r[key]))
        run.log(payload)
        return Path(run.dir).parent
    finally:
        run.finish()


def publish_report(
    sweep_dir: str | Path, out: str | Path | None = None, to_wandb: bool = False, group: str | None = None
) -> tuple[Path, Path | None]:
    """Write the report, then (to_wandb) log it; returns (report path, W&B run folder or None).

    The local report is written first and survives W&B trouble: a W&B error is logged, not raised.
    """
    runs = collect_runs(sweep_dir)
    path = write_report(sweep_dir, out, runs)
    run_dir = None
    if to_wandb:
        try:
            run_dir = log_report_to_wandb(runs, sweep_dir, group=group)
        except Exception as err:  # W&B trouble must not hide the local report
            log.error("logging the sweep report to W&B failed: %s", err)
    return path, run_dir
