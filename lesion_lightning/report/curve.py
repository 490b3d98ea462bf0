"""Tables and figure of the utility stage's data-budget curve (metrics.json ``curve``): per metric, one
row per real fraction with arms (1), (1b), (2), their paired differences and what arm (2)'s generated
images are worth in real images; the figure is metric vs number of real train images (log axis).
Pure formatting, shared by the stage's console output, table.md and the sweep report."""

from __future__ import annotations

import math
from pathlib import Path

from lesion_lightning.metrics.budget import BELOW, BEYOND
from lesion_lightning.report.utility_tables import ARM_TITLES, METRIC_TITLES, markdown_table, utility_markdown
from lesion_lightning.utils.io import save_figure

DASH = "—"


def _num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _cell(mean, ci=None, signed: bool = False) -> str:
    if not _num(mean):
        return DASH
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if ci and all(_num(v) for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def _count(x, budgets: list[int], offset: int = 0) -> str:
    """A stored equivalent (offset 0) or worth (offset = the real images arm (2) had) as text."""
    if x == BEYOND:
        return f"> {max(budgets) - offset}"
    if x == BELOW:
        return f"< {min(budgets) - offset}"
    return f"{x:.0f}" if _num(x) else DASH


def worth_cell(eq: dict | None) -> str:
    """'worth ≈ N real images [lo, hi] (x % of the A added)', or beyond / below the curve."""
    if not eq:
        return DASH
    budgets, own = eq["curve_budgets"], eq["n_real"]
    lo, hi = (_count(v, budgets, own) for v in eq["worth_ci"])
    ci = f" [{lo}, {hi}]"
    if eq["status"] == BEYOND:
        return f"beyond the curve (more than the {max(budgets)} real images of the full curve){ci}"
    if eq["status"] == BELOW:
        return f"below the curve (scores under {min(budgets)} real images){ci}"
    if eq.get("plateau"):
        return f"not identifiable: on the (1b) curve's plateau (it stops rising before {max(budgets)} real images){ci}"
    share = (
        f" ({100 * eq['worth_share']:.0f} % of the {eq['added']} added)"
        if _num(eq.get("worth_share"))
        else ""
    )
    return f"worth ≈ {eq['worth']:.0f} real images{ci}{share}"


def shown_metrics(results: dict) -> list[str]:
    """The task's metrics, less melanoma-vs-rest when it equals the macro AUROC (two classes)."""
    metrics = list(results["task"]["metrics"])
    if len(results["task"]["class_names"]) == 2 and "melanoma_auroc" in metrics:
        metrics.remove("melanoma_auroc")
    return metrics


def curve_rows(results: dict, test: str, metric: str) -> tuple[list[str], list[list[str]]]:
    curve = results["curve"]
    section = curve["tests"][test]
    points = section["points"]
    diffs = {(r["fraction"], r["arm"], r["reference"]): r["metrics"][metric] for r in section["differences"]}
    worth = {r["fraction"]: r["metrics"].get(metric) for r in section["equivalent_real"]}
    header = [
        "real fraction",
        "n real (+ synthetic in 2)",
        *(ARM_TITLES[a] for a in ("real", "real_balanced", "real_plus_synthetic")),
        "(2) − (1)",
        "(2) − (1b)",
        "arm (2)'s synthetic images, on the (1b) curve",
    ]
    rows = []
    for f, n in zip(curve["fractions"], curve["n_real"], strict=True):
        cells = []
        for arm in ("real", "real_balanced", "real_plus_synthetic"):
            p = points.get(f"{arm}@{f:g}")
            cells.append(_cell(p["mean"][metric], p["mean_ci"][metric]) if p else DASH)
        plus = points.get(f"real_plus_synthetic@{f:g}")
        added = plus["train_size"]["synthetic"] if plus else 0
        d = [diffs.get((f, "real_plus_synthetic", ref)) for ref in ("real", "real_balanced")]
        rows.append(
            [
                f"{f:g}",
                f"{n} (+ {added})" if plus else str(n),
                *cells,
                *(_cell(x["mean"], x["mean_ci"], signed=True) if x else DASH for x in d),
                worth_cell(worth.get(f)),
            ]
        )
    only = points.get("synthetic_only")
    if only:
        size = only["train_size"]
        rows.append(
            [
                "(3) synthetic only",
                f"0 (+ {size['synthetic']})",
                DASH,
                DASH,
                _cell(only["mean"][metric], only["mean_ci"][metric]),
                DASH,
                DASH,
                worth_cell(worth.get(None)),
            ]
        )
    return header, rows


def curve_tables(results: dict | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(``<test>/<metric>``, header, rows) for every curve table of a run (W&B tables); [] without a curve."""
    if not results or not results.get("curve"):
        return []
    return [
        (f"{test}/{m}", *curve_rows(results, test, m))
        for test in results["curve"]["tests"]
        for m in shown_metrics(results)
    ]


def describe_curve(results: dict, test: str) -> str:
    curve = results["curve"]
    section = curve["tests"][test]
    counts = ", ".join(f"{k} {v}" for k, v in section["class_counts"].items())
    return (
        f"Data-budget curve on **{test}** (n={section['n']}: {counts}); nested stratified real subsets "
        f"(the same for every arm), {len(curve['seeds'])} seeds per point. Cells: seed-mean [95 % "
        f"hierarchical bootstrap interval: seeds, then stratified test images, {curve['num_resamples']} "
        "resamples, paired across points]. Worth = real images at which the (1b) curve (log n, made "
        "non-decreasing) reaches arm (2)'s score, minus the real images arm (2) had."
    )


def curve_markdown(results: dict) -> list[str]:
    if not results.get("curve"):
        return []
    lines: list[str] = []
    for test in results["curve"]["tests"]:
        lines += ["", describe_curve(results, test)]
        for m in shown_metrics(results):
            lines += ["", f"*{METRIC_TITLES.get(m, m)}*", ""]
            lines += markdown_table(*curve_rows(results, test, m))
    return lines


def utility_report_markdown(results: dict) -> list[str]:
    """Everything the stage prints and the sweep report shows: the arms table, fidelity, notes, the curve."""
    return utility_markdown(results) + curve_markdown(results)


def plot_curve(entries: list[tuple[str, dict]], path: Path) -> Path | None:
    """One panel per (test set, metric): metric vs real train images (log axis), a line per arm with
    95 % intervals, arm (3) as a dotted level; ``entries`` = (label, results) pairs. None when none has a curve."""
    entries = [(label, r) for label, r in entries if r and r.get("curve")]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(m for _, r in entries for m in shown_metrics(r)))
    tests = list(dict.fromkeys(t for _, r in entries for t in r["curve"]["tests"]))
    fig, axes = plt.subplots(
        len(tests), len(metrics), figsize=(4.6 * len(metrics), 3.4 * len(tests) + 0.6), squeeze=False
    )
    colors = {"real": "C0", "real_balanced": "C2", "real_plus_synthetic": "C1", "synthetic_only": "C3"}
    styles = ["-", "--", ":", "-."]
    for (row, test), (col, m) in ((rt, cm) for rt in enumerate(tests) for cm in enumerate(metrics)):
        ax = axes[row][col]
        for e, (label, r) in enumerate(entries):
            curve = r["curve"]
            if test not in curve["tests"]:
                continue
            points = curve["tests"][test]["points"]
            for arm in ("real", "real_balanced", "real_plus_synthetic"):
                xs, ys, lo, hi = [], [], [], []
                for f, n in zip(curve["fractions"], curve["n_real"], strict=True):
                    p = points.get(f"{arm}@{f:g}")
                    if not p or not _num(p["mean"].get(m)):
                        continue
                    ci = p["mean_ci"].get(m) or [p["mean"][m]] * 2
                    xs.append(n)
                    ys.append(p["mean"][m])
                    lo.append(p["mean"][m] - ci[0])
                    hi.append(ci[1] - p["mean"][m])
                if xs:
                    name = ARM_TITLES[arm] + (f" ({label})" if len(entries) > 1 else "")
                    ax.errorbar(
                        xs,
                        ys,
                        yerr=[lo, hi],
                        color=colors[arm],
                        ls=styles[e % 4],
                        marker="o",
                        ms=3,
                        capsize=2,
                        label=name,
                    )
            only = points.get("synthetic_only")
            if only and _num(only["mean"].get(m)):
                ax.axhline(
                    only["mean"][m],
                    color=colors["synthetic_only"],
                    ls=":",
                    lw=1,
                    label=ARM_TITLES["synthetic_only"] if e == 0 else None,
                )
        ax.set_xscale("log")
        budgets = sorted({n for _, r in entries for n in r["curve"]["n_real"]})
        ax.set_xticks(budgets, [str(n) for n in budgets])  # the measured budgets, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel("real train images (log axis)")
        ax.set_title(f"{METRIC_TITLES.get(m, m)} ({test})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    # one legend for the figure, from every panel (a panel can be empty when its metric is undefined,
    # e.g. AUROC on a test set with one class)
    legend = {}
    for ax in (a for row in axes for a in row):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(
            list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend)), fontsize=8
        )
    fig.tight_layout(rect=(0, 0.1 / len(tests), 1, 1))
    save_figure(fig, path)
    plt.close(fig)
    return path
