"""Hydra callback: after a pipeline multirun, write the sweep's comparison report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lesion_lightning.report import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            path = write_report(sweep_dir)
        except Exception as err:  # a report problem must not hide the finished runs
            log.error(
                "sweep report for %s failed: %s (re-run `python -m lesion_lightning.report %s`)",
                sweep_dir,
                err,
                sweep_dir,
            )
            return
        print(f"sweep report: {path}")
        if config.get("log_with") in ("wandb", "many"):
            from lesion_lightning.report_wandb import log_report_to_wandb

            try:
                log_report_to_wandb(sweep_dir, group=config.get("group"))
            except Exception as err:  # W&B trouble must not hide the local report
                log.error("logging the sweep report to W&B failed: %s", err)
