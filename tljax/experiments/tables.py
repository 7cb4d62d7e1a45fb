"""What every report shares: statistics over seeds (mean, std, 95% t-interval, paired
differences), a distinct style per row, and figures written as PNG through epath, atomically
(a workdir may be a bucket). Used by the sweep, suite and search reports and by evaluate's
confusion plot."""
import io
import math

import numpy as np

from tljax import paths


def t_quantile(n):
    """Two-sided 95% Student-t quantile with n-1 degrees of freedom."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def stats(values):
    """n, mean, std (ddof=1) and the 95% t-interval half-width of the mean; None values skipped."""
    values = np.asarray([v for v in values if v is not None], float)
    n = len(values)
    if not n:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "ci95": float("nan")}
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"n": n, "mean": float(values.mean()), "std": std,
            "ci95": t_quantile(n) * std / math.sqrt(n) if n > 1 else float("nan")}


def paired(by_seed, base_by_seed):
    """stats of by_seed[s] - base_by_seed[s] over the seeds where both have a value."""
    return stats(by_seed[s] - base_by_seed[s] for s in sorted(set(by_seed) & set(base_by_seed))
                 if by_seed[s] is not None and base_by_seed[s] is not None)


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
          "#7f7f7f", "#bcbd22"]
MARKERS = "osD^vP*Xhp"


def style(index):
    """Distinct (color, marker) for every row: past ten rows the markers shift and go hollow."""
    cycle = index // len(COLORS)
    row_style = dict(color=COLORS[index % len(COLORS)],
                     marker=MARKERS[(index + cycle) % len(MARKERS)])
    return {**row_style, "markerfacecolor": "white"} if cycle % 2 else row_style


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def percent_axis(ax):
    """Keeps an accuracy axis (in %) within 0..100: a 95% interval over two seeds can reach
    past 180 %, which says nothing and squeezes the points. (Half a point of room either
    side, so a marker at 100 % is whole.)"""
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -0.5), min(high, 100.5))


def save_figure(fig, path, dpi=120):
    """Writes `fig` as a PNG to `path` (local or a bucket) atomically, closes it; returns the
    path. The saved area grows to hold titles and legends placed outside the axes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    paths.write_bytes_atomic(path, buffer.getvalue())
    return str(path)
