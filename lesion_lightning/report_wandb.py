"""The sweep report in W&B: a table and the pictures, in the sweep's group, as a `report` job."""

from __future__ import annotations

from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.report import PLOT, collect_run, find_pipelines
from lesion_lightning.utils.wandb_utils import resolve_offline

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


def log_report_to_wandb(
    sweep_dir: str | Path,
    project: str = "lesion_lightning",
    offline: bool | str = "auto",
    group: str | None = None,
) -> Path:
    """Log the sweep's comparison as one W&B run (offline without credentials); returns its run folder."""
    import json

    import wandb

    sweep_dir = Path(sweep_dir).resolve()
    runs = sorted((collect_run(p) for p in find_pipelines(sweep_dir)), key=lambda r: r["grid_value"] or 0)
    if group is None:  # the group the sweep's stages logged into
        states = [json.loads(p.read_text()) for p in find_pipelines(sweep_dir)]
        group = next((s["group"] for s in states if s.get("group")), f"pipeline-{sweep_dir.name}")
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
        for r in runs:
            for key in ("reconstructions", "samples_grid", "memorization_picture"):
                if r[key] is not None:
                    payload[f"report/{key}/grid{r['grid_value']}"] = wandb.Image(str(r[key]))
        run.log(payload)
        return Path(run.dir).parent
    finally:
        run.finish()
