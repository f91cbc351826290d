"""Regression metrics of a latency predictor, all on milliseconds.

``mape`` and ``within_*`` are fractions (0.95 means 95%): latency error is judged
relative to the latency (nn-Meter reports the share of predictions within +-10%).
Kendall's tau-b and Spearman's rho (scipy.stats) measure what a search needs most: that
the predictor *ranks* architectures right.  Rank correlations of fewer than two points,
or of constant predictions, are undefined and returned as NaN.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import DataError


def regression_metrics(y_true_ms, y_pred_ms) -> dict:
    """``rmse_ms, mape, within_5, within_10, kendall_tau, spearman_rho`` (floats)."""
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(y_true_ms, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred_ms, dtype=np.float64).reshape(-1)
    if len(t) != len(p):
        raise DataError(f"y_true has {len(t)} values but y_pred has {len(p)}")
    if len(t) == 0:
        raise DataError("cannot compute metrics of zero predictions")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise DataError("measured latencies must be finite and > 0 ms")
    rel = np.abs(p - t) / t
    tau = rho = float("nan")
    if len(t) >= 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        tau = float(kendalltau(t, p).statistic)
        rho = float(spearmanr(t, p).statistic)
    return {
        "rmse_ms": float(np.sqrt(np.mean((p - t) ** 2))),
        "mape": float(rel.mean()),
        "within_5": float(np.mean(rel <= 0.05)),
        "within_10": float(np.mean(rel <= 0.10)),
        "kendall_tau": tau,
        "spearman_rho": rho,
        "n": int(len(t)),
    }
