"""`python -m lesion_lightning.report SWEEP_DIR [--out PATH] [--wandb [--group G]]`: the sweep report.

Finds every `pipeline.json` below SWEEP_DIR (one per grid size; a multirun has one per job folder) and
writes SWEEP_DIR/report.md with metrics_vs_grid.png (and utility.png) beside it; `--wandb` also logs the
table and pictures as one W&B run in the sweep's group (offline without credentials).
Exit 0 on success, 2 when there is nothing to report, 1 when the W&B run could not be logged.
"""

from __future__ import annotations

import argparse
import sys

from lesion_lightning.report.publish import publish_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lesion_lightning.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir", help="folder holding the pipeline run(s): searched for pipeline.json")
    parser.add_argument("--out", default=None, help="report path (default SWEEP_DIR/report.md)")
    parser.add_argument("--wandb", action="store_true", help="also log the report as one W&B run")
    parser.add_argument("--group", default=None, help="W&B group (default: the one the sweep logged into)")
    args = parser.parse_args(argv)
    try:
        path, run_dir = publish_report(args.sweep_dir, args.out, to_wandb=args.wandb, group=args.group)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    if not args.wandb:
        return 0
    if run_dir is None:
        return 1
    print(f"W&B report run: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
