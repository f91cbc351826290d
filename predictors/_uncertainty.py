"""How sure a predictor is: split-conformal residuals on the log scale.

Why residuals and not each model's own variance: only some models have one (ensembles,
forests) and none of those spreads is calibrated: bootstrap members agree with each other
more than with a fresh measurement, which also carries the machine's noise.  Out-of-fold
residuals measure exactly what a user asks, "how far is a *new* arch from its prediction",
for every model alike (split conformal prediction: Vovk et al. 2005; Lei et al., JASA 2018,
"Distribution-free predictive inference for regression").

Residuals are ``r = log(measured / predicted)``: latency errors are relative (within +-10%),
so one distribution of ``r`` serves fast and slow archs.  From it:

- ``interval``: ``predicted * exp(q_lo(r)), predicted * exp(q_hi(r))``, empirical quantiles;
- ``prob_below``: ``P(latency <= T) = F_r(log(T / predicted))``, the residuals' empirical CDF
  interpolated between plotting positions ``(i + 0.5) / n`` (never exactly 0 or 1 from a
  finite sample);
- ``std_ms``: the standard deviation of ``predicted * exp(r)`` under a log-normal fitted to
  ``r`` (mean and variance), a single number where a caller wants one.

The residuals are homoscedastic on the log scale: the model does not say that one arch is
less certain than another (for that, ``predict_spread`` of models with members, which
active profiling uses).  ``coverage`` checks the intervals on held-out data.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import PredictorError

LEVELS = (0.8, 0.95)


def fold_splits(n: int, folds: int, seed: int):
    """``(train rows sorted, held-out rows)`` of a seeded ``folds``-fold split of ``n`` rows."""
    perm = np.random.default_rng(seed).permutation(n)
    for part in np.array_split(perm, folds):
        yield np.setdiff1d(perm, part), part


def kfold_residuals(pred, idx: np.ndarray, y_ms: np.ndarray, folds: int) -> np.ndarray:
    """Out-of-fold ``log(y / predicted)`` of every row, from copies of ``pred`` (same
    hyper-parameters and seed) each fitted without its fold; empty when a fold would
    hold fewer than 2 rows."""
    n = len(idx)
    if folds < 2 or n < 2 * folds:
        return np.zeros(0)
    r = np.empty(n)
    for train, part in fold_splits(n, folds, pred.seed + 7919):
        m = pred.clone()
        m.encoding_ = pred.encoding_
        m._fit(idx[train], y_ms[train])
        r[part] = log_ratio(y_ms[part], m._predict(idx[part]))
    return r


def log_ratio(y_ms, pred_ms) -> np.ndarray:
    """``log(y / pred)``, with a non-positive prediction (a linear model far outside its data)
    counted as a thousandth of the measurement rather than a NaN."""
    y = np.asarray(y_ms, dtype=np.float64)
    p = np.asarray(pred_ms, dtype=np.float64)
    return np.log(y / np.where(p > 0, p, y * 1e-3))


def residuals(pred) -> np.ndarray:
    r = np.asarray(getattr(pred, "residuals_", np.zeros(0)), dtype=np.float64)
    if len(r) < 2:
        raise PredictorError(
            f"predictor {pred.name!r} has no uncertainty estimate: it was fitted on "
            f"{getattr(pred, 'n_train_', '?')} archs (need >= {2 * pred.residual_folds} for "
            f"{pred.residual_folds}-fold residuals) or with uncertainty=False")
    return r


def std_ms(pred, mean_ms: np.ndarray) -> np.ndarray:
    r = residuals(pred)
    mu, s2 = float(r.mean()), float(r.var())
    return np.asarray(mean_ms) * np.exp(mu + s2 / 2) * np.sqrt(np.expm1(s2))


def interval(pred, mean_ms: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < level < 1.0:
        raise PredictorError(f"interval level must be in (0, 1), got {level}")
    r = residuals(pred)
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    mean = np.asarray(mean_ms)
    return mean * np.exp(lo), mean * np.exp(hi)


def prob_below(pred, mean_ms: np.ndarray, budget_ms: float) -> np.ndarray:
    if not np.isfinite(budget_ms) or budget_ms <= 0:
        raise PredictorError(f"the latency threshold must be a positive number of ms, got {budget_ms}")
    r = np.sort(residuals(pred))
    n = len(r)
    z = np.log(float(budget_ms) / np.asarray(mean_ms, dtype=np.float64))
    return np.interp(z, r, (np.arange(n) + 0.5) / n, left=0.5 / n, right=1 - 0.5 / n)


def coverage(pred, archs, latency_ms, *, predicted_ms=None) -> dict:
    """Share of measured latencies inside the 80% and 95% intervals (ideal: 0.80, 0.95);
    ``predicted_ms``: the predictions of ``archs`` where the caller has them already."""
    y = np.asarray(latency_ms, dtype=np.float64)
    mean = pred.predict(archs) if predicted_ms is None else np.asarray(predicted_ms, dtype=np.float64)
    out = {}
    for level in LEVELS:
        lo, hi = interval(pred, mean, level)
        out[f"in_{round(100 * level)}"] = float(np.mean((y >= lo) & (y <= hi)))
    return out
