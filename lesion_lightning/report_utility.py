"""Tables and bar plot of the downstream-utility stage (`utility/metrics.json`), for the stage's own
console output and the sweep report. Pure formatting: matplotlib imported only to plot, saved like every picture (utils.io.save_figure)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lesion_lightning.utils.io import save_figure
from lesion_lightning.utils.plotting import clipped_yerr

METRICS_JSON = Path("utility/metrics.json")
PLOT = "utility.png"
ARM_TITLES = {
    "real": "(1) real",
    "real_plus_synthetic": "(2) real + synthetic",
    "synthetic_only": "(3) synthetic only",
}
DIFF_TITLES = {
    "real_plus_synthetic - real": "(2) − (1)",
    "synthetic_only - real": "(3) − (1)",
}
METRIC_TITLES = {
    "macro_auroc": "macro AUROC (OvR)",
    "melanoma_auroc": "melanoma-vs-rest AUROC",
    "balanced_accuracy": "balanced accuracy",
}
DASH = "—"


def read_utility(run_dir: Path) -> tuple[dict | None, str | None]:
    """A pipeline run's utility results, or (None, why not)."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        return None, "utility stage not run (no utility/metrics.json)"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return None, f"utility/metrics.json unreadable: {err}"
    if not isinstance(data, dict):
        return None, "utility/metrics.json is not a JSON object"
    if data.get("skipped"):
        return None, f"utility skipped: {data['skipped']}"
    return data, None


def _num(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _cell(mean, sd=None, ci=None, signed: bool = False) -> str:
    if not _num(mean):
        return DASH
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if _num(sd):
        text += f" ± {sd:.3f}"
    if ci and all(_num(v) for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def utility_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per arm (mean ± sd over seeds [95 % bootstrap interval]) and one per
    difference to arm (1) (difference of seed-means [paired 95 % bootstrap interval])."""
    metrics = list(results["task"]["metrics"])
    header = ["arm", "train images (real + synthetic)", *(METRIC_TITLES.get(m, m) for m in metrics)]
    rows = []
    for arm, entry in results["arms"].items():
        size = entry.get("train_size") or {}
        rows.append(
            [
                ARM_TITLES.get(arm, arm),
                f"{size.get('real', 0)} + {size.get('synthetic', 0)}",
                *(_cell(entry["mean"][m], entry["sd"][m], entry["ci95"][m]) for m in metrics),
            ]
        )
    for name, diff in results["differences"].items():
        rows.append(
            [
                DIFF_TITLES.get(name, name),
                "paired, same test images",
                *(_cell(diff[m]["mean"], None, diff[m]["ci95"], signed=True) for m in metrics),
            ]
        )
    return header, rows


def fidelity_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    header = [
        "class",
        "generated called by their label (arm-1 classifiers)",
        "n generated",
        "real test recall (same classifiers)",
        "n real test",
    ]
    rows = []
    for name, e in (results.get("fidelity") or {}).items():
        rows.append(
            [
                name,
                _cell(e.get("generated_accuracy"), e.get("generated_sd"), e.get("generated_ci95")),
                str(e.get("n_generated", 0)),
                _cell(e.get("real_test_accuracy"), e.get("real_test_sd"), e.get("real_test_ci95")),
                str(e.get("n_real_test", 0)),
            ]
        )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def describe(results: dict) -> str:
    """One sentence saying what the figures are."""
    s = results["settings"]
    test = results["data"]["test"]
    counts = ", ".join(f"{k} {v}" for k, v in test.items())
    return (
        f"Classifiers ({results['model']}, {s['steps']} steps of batch {s['batch_size']} per arm and seed, "
        f"{len(results['seeds'])} seeds) tested on the real **{results['split']}** split "
        f"(n={sum(test.values())}: {counts}). Cells: mean ± sd over seeds [95 % stratified paired "
        f"bootstrap interval over test images, {results['num_resamples']} resamples, of the seed-mean]."
    )


def utility_markdown(results: dict) -> list[str]:
    """The stage's tables as markdown lines (used by the console output and the sweep report)."""
    lines = [describe(results), ""]
    lines += markdown_table(*utility_rows(results))
    fidelity = fidelity_rows(results)
    if fidelity[1]:
        lines += [
            "",
            "Class fidelity: the share of generated samples of each class that the arm-(1) "
            "classifiers assign to that class, beside their recall on real test images of it.",
            "",
        ]
        lines += markdown_table(*fidelity)
    for note in results.get("notes") or []:
        lines += ["", f"**Note:** {note}"]
    return lines


def plot_utility(entries: list[tuple[str, dict]], path: Path) -> Path | None:
    """One panel per metric: a bar per (run, arm) at the seed-mean with its 95 % interval, dots for
    the seeds. ``entries`` = (label, utility results) pairs; written atomically. None when empty."""
    entries = [(label, r) for label, r in entries if r]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(m for _, r in entries for m in r["task"]["metrics"]))
    arms = list(dict.fromkeys(a for _, r in entries for a in r["arms"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / len(arms)
    for ax, m in zip(axes[0], metrics, strict=True):
        for a, arm in enumerate(arms):
            xs, ys, cis = [], [], []
            for i, (_, r) in enumerate(entries):
                e = r["arms"].get(arm)
                mean = e["mean"].get(m) if e else None
                if not _num(mean):
                    continue
                x = i + (a - (len(arms) - 1) / 2) * width
                ci = e["ci95"].get(m) or [mean, mean]
                xs.append(x)
                ys.append(mean)
                cis.append(ci)
                seeds = [s.get(m) for s in e["per_seed"] if _num(s.get(m))]
                ax.plot([x] * len(seeds), seeds, "k.", ms=3, zorder=3)
            ax.bar(xs, ys, width * 0.9, yerr=clipped_yerr(ys, cis), capsize=3, label=ARM_TITLES.get(arm, arm))
        if "auroc" in m:
            ax.axhline(0.5, color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(entries)), [label for label, _ in entries])
        ax.set_ylim(0, 1)
        ax.set_title(METRIC_TITLES.get(m, m) + " (real test)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(arms), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, path)
    plt.close(fig)
    return path
