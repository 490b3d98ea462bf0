"""The sweep report: a folder of pipeline runs -> report.md, plots and (optionally) one W&B run.

collect.py         run folders -> one dict per run (via utils.run_folder; never fails on a partial sweep)
render.py          those dicts -> the report's markdown
plots.py           metrics against grid size; the downstream-utility bars
utility_tables.py  the utility stage's tables (also printed and logged by that stage)
publish.py         write_report, log_report_to_wandb, publish_report
callback.py        the Hydra callback that publishes after a pipeline multirun
__main__.py        `python -m lesion_lightning.report SWEEP_DIR [--wandb]`
"""
