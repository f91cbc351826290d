"""Predicted-vs-measured scatter plot of a predictor (``hwnas predictor eval --png``).

Why a picture beside the numbers: within +-10% and tau summarise, but a scatter shows
*where* a model is wrong (a bias at the fast end, one slow cluster), which decides whether
more data or another model helps.  Log axes, because latencies span several x and errors
are relative; the dashed lines are +-10%.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def scatter_png(path, measured_ms, predicted_ms, *, title: str = "", metrics: dict | None = None) -> str:
    """Write the plot to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(measured_ms, dtype=np.float64)
    p = np.asarray(predicted_ms, dtype=np.float64)
    lo, hi = float(min(y.min(), p.min())) * 0.9, float(max(y.max(), p.max())) * 1.1
    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=110)
    inside = np.abs(p - y) <= 0.1 * y
    ax.scatter(y[inside], p[inside], s=8, alpha=0.6, label="within +-10%")
    ax.scatter(y[~inside], p[~inside], s=10, alpha=0.8, color="tab:red", label="outside")
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=0.8)
    for f in (0.9, 1.1):
        ax.plot(line, f * line, color="grey", lw=0.7, ls="--")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)",
           ylabel="predicted latency (ms)")
    if metrics:
        ax.text(0.03, 0.97, f"within 10%: {100 * metrics['within_10']:.1f}%\nKendall tau: "
                f"{metrics['kendall_tau']:.3f}\nn = {metrics['n']}", transform=ax.transAxes, va="top", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
