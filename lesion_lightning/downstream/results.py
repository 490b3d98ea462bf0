"""The utility stage's results as flat metrics, and logging them (with the table and the bar plot) to
the `logger` group's loggers."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from lesion_lightning.report.curve import curve_tables
from lesion_lightning.report.plots import UTILITY_PLOT
from lesion_lightning.report.utility_tables import fidelity_rows, utility_rows
from lesion_lightning.utils.instantiate import instantiate_loggers
from lesion_lightning.utils.wandb_utils import finish_wandb


def flat_metrics(results: dict) -> dict[str, float]:
    """``utility/<arm>/<metric>`` seed-means (full split), ``utility/diff_<arm>/<metric>`` (minus arm 1),
    ``utility/diff_<arm>_vs_<ref>/<metric>``, the curve's (:func:`curve_metrics`), ``utility/fidelity/<class>``."""
    flat = {}
    for arm, entry in results["arms"].items():
        for m, v in entry["mean"].items():
            if v is not None:
                flat[f"utility/{arm}/{m}"] = float(v)
    for name, diff in results["differences"].items():
        arm, ref = name.split(" - ")
        # `diff_<arm>` is the difference to arm (1); other references are named
        prefix = f"utility/diff_{arm}" if ref == "real" else f"utility/diff_{arm}_vs_{ref}"
        for m, d in diff.items():
            if d["mean"] is not None:
                flat[f"{prefix}/{m}"] = float(d["mean"])
    flat.update(curve_metrics(results.get("curve")))
    for c, e in results["fidelity"].items():
        if e.get("generated_accuracy") is not None:
            flat[f"utility/fidelity/{c}"] = float(e["generated_accuracy"])
    return flat


def curve_metrics(curve: dict | None) -> dict[str, float]:
    """``utility/curve/<test>/<arm>@<fraction>/<metric>`` seed-means and
    ``utility/curve/<test>/worth@<fraction>/<metric>`` (equivalent real images minus the real ones
    arm (2) had; only where it lies on the curve, not beyond or below it, nor on its plateau)."""
    flat: dict[str, float] = {}
    if not curve:
        return flat
    for test, section in curve["tests"].items():
        for key, point in section["points"].items():
            for m, v in point["mean"].items():
                if v is not None:
                    flat[f"utility/curve/{test}/{key}/{m}"] = float(v)
        for row in section["equivalent_real"]:
            where = "synthetic_only" if row["fraction"] is None else f"worth@{row['fraction']:g}"
            for m, eq in row["metrics"].items():
                if eq and isinstance(eq.get("worth"), int | float) and not eq.get("plateau"):
                    flat[f"utility/curve/{test}/{where}/{m}"] = float(eq["worth"])
    return flat


def log_results(cfg: DictConfig, results: dict, out_dir: Path) -> None:
    """The flat metrics, the table and the bar plot to the `logger` group's loggers (W&B: job_type=utility)."""
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:
        return
    try:
        for logger in loggers:
            logger.log_hyperparams(results["settings"])
            logger.log_metrics(results["metrics"], step=0)
            if isinstance(logger, WandbLogger):
                header, rows = utility_rows(results)
                logger.log_table("utility/table", columns=header, data=rows)
                header, rows = fidelity_rows(results)
                logger.log_table("utility/fidelity", columns=header, data=rows)
                for key, columns, rows in curve_tables(results):
                    logger.log_table(f"utility/curve/{key}", columns=columns, data=rows)
                if (out_dir / UTILITY_PLOT).is_file():
                    logger.log_image("utility/curve", [str(out_dir / UTILITY_PLOT)])
            logger.save()
            logger.finalize("success")
    finally:
        finish_wandb()
