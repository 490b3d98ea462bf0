"""The sweep report's figures: metrics against the grid size, and the downstream-utility bars.
matplotlib is imported only inside the functions (the Agg backend), figures saved atomically."""

from __future__ import annotations

from pathlib import Path

from lesion_lightning.metrics.distribution import RELIABLE_N
from lesion_lightning.report.utility_tables import ARM_TITLES, METRIC_TITLES, is_number
from lesion_lightning.utils.io import save_figure

PLOT = "metrics_vs_grid.png"
UTILITY_PLOT = "utility.png"


def plot_metrics(runs: list[dict], path: Path) -> Path:
    """PSNR, bits/dim, bits per image (prior and marginal baseline), FID and the memorized fraction
    against the grid size, with 95 % intervals as error bars, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r["grid_value"] is not None]
    grids = sorted({r["grid_value"] for r in runs})
    extractors = sorted(
        {r["feature_extractor"] for r in runs if r["fid"] is not None and r["feature_extractor"]}
    )
    n_gen = sorted(
        {r["n_generated"] for r in runs if r["fid"] is not None and isinstance(r["n_generated"], int)}
    )
    fid_note = ""
    if extractors or n_gen:
        fid_note = (
            f"\n{', '.join(e.rsplit('.', 1)[-1] for e in extractors)}; n gen={','.join(map(str, n_gen))}"
        )
        if any(n < RELIABLE_N for n in n_gen):
            fid_note += f" (<{RELIABLE_N}: unreliable)"
    panels = [
        ("reconstruction PSNR (dB, per-image mean)", [("psnr", "VQ-VAE", "-o")]),
        (
            "prior bits/dim (test)",
            [("bits_per_dim", "PixelCNN", "-o"), ("marginal_bits_per_dim", "marginal baseline", "--s")],
        ),
        (
            "prior bits per image (test)",
            [("bits_per_image", "PixelCNN", "-o"), ("marginal_bits_per_image", "marginal baseline", "--s")],
        ),
        ("FID (test)" + fid_note, [("fid", "samples vs test", "-o")]),
        (
            "memorized fraction of samples",
            [("memorized:code_space", "code space", "-o"), ("memorized:feature_space", "features", "--s")],
        ),
    ]

    def point(run: dict, key: str) -> tuple[float | None, tuple[float, float] | None]:
        if key.startswith("memorized:"):
            mem = run["memorized"][key.split(":", 1)[1]]
            return (mem["value"], mem["ci"]) if mem else (None, None)
        return run[key], run["intervals"].get(key)

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, series) in zip(axes, panels, strict=True):
        drawn = False
        for key, label, style in series:
            points = sorted((r["grid_value"], *point(r, key)) for r in runs if point(r, key)[0] is not None)
            if points:
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                err = [
                    [y - (ci[0] if ci else y) for _, y, ci in points],
                    [(ci[1] if ci else y) - y for _, y, ci in points],
                ]
                ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "skipped / no data" if "FID" in title else "no data",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        elif len(series) > 1:
            ax.legend(fontsize=8)
        if grids:
            ax.set_xscale("log", base=2)
            ax.set_xticks(grids, [str(g) for g in grids])
            ax.set_xlim(min(grids) / 1.4, max(grids) * 1.4)
        ax.set_xlabel("latent grid size")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


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
            xs, ys, lo, hi = [], [], [], []
            for i, (_, r) in enumerate(entries):
                e = r["arms"].get(arm)
                mean = e["mean"].get(m) if e else None
                if not is_number(mean):
                    continue
                x = i + (a - (len(arms) - 1) / 2) * width
                ci = e["mean_ci"].get(m) or [mean, mean]
                xs.append(x)
                ys.append(mean)
                lo.append(mean - ci[0])
                hi.append(ci[1] - mean)
                seeds = [s.get(m) for s in e["per_seed"] if is_number(s.get(m))]
                ax.plot([x] * len(seeds), seeds, "k.", ms=3, zorder=3)
            ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], capsize=3, label=ARM_TITLES.get(arm, arm))
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
