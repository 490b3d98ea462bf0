"""The sweep report's FID ladder: per grid a table of its rungs, and one plot of floor / rFID / samples.

Read from each run's evaluate/metrics.json `ladder` section (metrics.ladder): every rung is an FID
against the same real reference on the same extractor, so within a grid the gaps say where realism is
lost: floor -> rFID is the VQ-VAE's cost, rFID -> samples the prior's.
"""

from __future__ import annotations

import math
from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.metrics.ladder import RUNG_LABELS, RUNGS
from lesion_lightning.metrics.naming import extractor_tag
from lesion_lightning.utils.io import save_figure
from lesion_lightning.utils.plotting import clipped_yerr

PLOT = "fid_ladder.png"
DASH = "—"
PLOT_SERIES = (
    ("floor", "floor (train subset)", "-o"),
    ("reconstruction", "rFID (VQ-VAE reconstructions)", "-s"),
    ("samples_matched", "samples at the reference's n", "-^"),
    ("samples", "all samples", ":v"),
)


def _num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sig(v: float) -> str:
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def _cell(rung: dict, key: str) -> str:
    value, ci = rung.get(key), rung.get(f"{key}_ci")
    if not _num(value):
        return DASH
    fmt = (lambda v: f"{v:.3f}") if key in ("precision", "recall") else _sig
    text = fmt(value)
    if isinstance(ci, list) and len(ci) == 2 and all(_num(c) for c in ci):
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _named(header: str, ladder: dict) -> str:
    """A set-metric column named after a stand-in extractor (`FID_RandomConvFeatures16`), plain on Inception."""
    tag = extractor_tag(ladder)
    return f"{header}_{tag}" if tag else header


def _n_cell(rung: dict) -> str:
    n, m = rung.get("n_compared"), rung.get("n_real")
    text = f"{n} / {m}"
    if isinstance(n, int) and isinstance(m, int) and min(n, m) < RELIABLE_N:
        text += f" (unreliable: < {RELIABLE_N})"
    if isinstance(n, int) and isinstance(m, int) and n < m:
        text += ", fewer than the reference"
    return text


def ladder_markdown(runs: list[tuple[str, dict | None, str]]) -> list[str]:
    """`## FID ladder` with one table per grid. runs: (grid label, ladder section or None, run link)."""
    shown = [(label, ladder, link) for label, ladder, link in runs if ladder]
    if not shown:
        return []
    lines = [
        "",
        "## FID ladder: where each grid loses realism",
        "",
        "Every rung is scored against the same real test images on the same features, at the reference's "
        "n: **floor** = a seeded train subset of that size (two real sets; no generator can do better at "
        "this n), **rFID** = the VQ-VAE's reconstructions of the reference images (the ceiling the first "
        "stage puts on samples), **samples** = generated images at the reference's n and all of them. "
        "floor → rFID is what the VQ-VAE costs, rFID → samples what the prior costs. FID rises as n falls, "
        "so compare rungs at the same n; FID∞ (Chong & Forsyth 2020) extrapolates each rung to n → ∞. "
        "Intervals as in the generation section (docs/metrics.md).",
    ]
    for label, ladder, link in shown:
        if ladder.get("skipped"):
            lines += ["", f"### {label} ({link})", "", f"skipped: {ladder['skipped']}"]
            continue
        lines += [
            "",
            f"### {label} ({link})",
            "",
            f"{ladder.get('n_reference')} real test images, {ladder.get('feature_extractor')}, images at "
            f"{'x'.join(map(str, ladder.get('image_size') or []))}, "
            f"data.normalization={ladder.get('normalization')}.",
            "",
            "| rung | n compared / real | "
            + " | ".join(_named(k, ladder) for k in ("FID", "FID∞", "KID", "precision", "recall"))
            + " |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in RUNGS:
            rung = (ladder.get("rungs") or {}).get(name)
            if rung is None:
                continue
            cells = [RUNG_LABELS[name], _n_cell(rung)] + [
                _cell(rung, k) for k in ("fid", "fid_inf", "kid", "precision", "recall")
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def plot_ladder(runs: list[tuple[int | None, dict | None]], path: Path) -> Path | None:
    """FID of each rung against the grid size (95 % intervals as clipped error bars); None without data."""
    points = [(g, lad) for g, lad in runs if g is not None and lad and lad.get("rungs")]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = sorted({g for g, _ in points})
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for key, label, style in PLOT_SERIES:
        rows = sorted(
            (g, lad["rungs"][key]["fid"], lad["rungs"][key].get("fid_ci"))
            for g, lad in points
            if _num((lad["rungs"].get(key) or {}).get("fid"))
        )
        if rows:
            ys = [r[1] for r in rows]
            ax.errorbar(
                [r[0] for r in rows],
                ys,
                yerr=clipped_yerr(ys, [r[2] for r in rows]),
                fmt=style,
                capsize=3,
                label=label,
            )
    extractors = sorted({str(lad.get("feature_extractor")) for _, lad in points})
    refs = sorted({lad.get("n_reference") for _, lad in points if isinstance(lad.get("n_reference"), int)})
    norms = sorted({str(lad.get("normalization")) for _, lad in points})
    title = f"FID ladder vs n={','.join(map(str, refs))} real test images\n{', '.join(extractors)}; normalization={','.join(norms)}"
    if any(n < RELIABLE_N for n in refs):
        title += f" (n<{RELIABLE_N}: unreliable)"
    ax.set_title(title, fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(grids, [str(g) for g in grids])
    ax.set_xlim(min(grids) / 1.4, max(grids) * 1.4)
    ax.set_xlabel("latent grid size")
    ax.set_ylabel("FID (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
