"""The Hydra callback that writes the sweep report after a pipeline multirun (Lightning's callbacks live in
`callbacks/`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lesion_lightning.report.publish import publish_report

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """After a pipeline multirun: write the sweep's comparison report (and log it when the sweep used W&B)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            path, _ = publish_report(
                sweep_dir, to_wandb=config.get("log_with") in ("wandb", "many"), group=config.get("group")
            )
        except Exception as err:  # a report problem must not hide the finished runs
            log.error(
                "sweep report for %s failed: %s (re-run `python -m lesion_lightning.report %s`)",
                sweep_dir,
                err,
                sweep_dir,
            )
            return
        print(f"sweep report: {path}")
