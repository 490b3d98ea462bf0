"""Tables of the downstream-utility stage's results (`utility/metrics.json`), for the stage's own console
output, its W&B tables and the sweep report. Pure formatting: no file is read or written here."""

from __future__ import annotations

import math

ARM_TITLES = {
    "real": "(1) real",
    "real_balanced": "(1b) real, class-balanced sampling",
    "real_plus_synthetic": "(2) real + synthetic",
    "synthetic_only": "(3) synthetic only",
}
DIFF_TITLES = {
    "real_plus_synthetic - real": "(2) − (1)",
    "real_plus_synthetic - real_balanced": "(2) − (1b)",
    "real_balanced - real": "(1b) − (1)",
    "synthetic_only - real": "(3) − (1)",
    "synthetic_only - real_balanced": "(3) − (1b)",
}
METRIC_TITLES = {
    "macro_auroc": "macro AUROC (OvR)",
    "melanoma_auroc": "melanoma-vs-rest AUROC",
    "balanced_accuracy": "balanced accuracy",
}
DASH = "—"


def is_number(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _cell(mean, sd=None, ci=None, signed: bool = False) -> str:
    if not is_number(mean):
        return DASH
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if is_number(sd):
        text += f" ± {sd:.3f}"
    if ci and all(is_number(v) for v in ci):
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
                *(_cell(entry["mean"][m], entry["sd"][m], entry["mean_ci"][m]) for m in metrics),
            ]
        )
    for name, diff in results["differences"].items():
        rows.append(
            [
                DIFF_TITLES.get(name, name),
                "paired, same test images",
                *(_cell(diff[m]["mean"], None, diff[m]["mean_ci"], signed=True) for m in metrics),
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
                _cell(e.get("generated_accuracy"), e.get("generated_sd"), e.get("generated_accuracy_ci")),
                str(e.get("n_generated", 0)),
                _cell(e.get("real_test_accuracy"), e.get("real_test_sd"), e.get("real_test_accuracy_ci")),
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
        f"(n={sum(test.values())}: {counts}). Cells: mean ± sd over seeds [95 % interval of the "
        f"seed-mean: {results.get('interval') or 'stratified paired bootstrap over test images'}, "
        f"{results['num_resamples']} resamples]."
    )


def utility_markdown(results: dict) -> list[str]:
    """The arms table (full split), class fidelity and notes as markdown lines; the data-budget curve's
    tables follow them in report.curve.utility_report_markdown (the console output and the sweep report)."""
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
