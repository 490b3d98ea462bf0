"""Error bars that never crash a figure.

matplotlib refuses a negative error-bar extent, and an interval need not contain its point estimate
(a bootstrap interval of a biased statistic can sit entirely above it). Each side is clipped at zero:
the bar then ends at the point on that side, and the tables beside the plot keep the interval as computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def clipped_yerr(values: Sequence[float], intervals: Sequence[Sequence[float] | None]) -> list[list[float]]:
    """[[below...], [above...]] for `errorbar(yerr=...)` / `bar(yerr=...)`: max(0, y - low), max(0, high - y);
    0 where an interval is missing or not finite."""
    below, above = [], []
    for y, ci in zip(values, intervals, strict=True):
        ok = (
            ci is not None
            and len(ci) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in ci)
        )
        below.append(max(0.0, y - ci[0]) if ok else 0.0)
        above.append(max(0.0, ci[1] - y) if ok else 0.0)
    return [below, above]
