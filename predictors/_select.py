"""``auto``: pick the model by k-fold cross-validation on the training split.

Why CV on the training split only: the held-out split then stays an honest estimate of
the chosen model (selecting on it would bias the reported metrics upward).  The candidates
include the per-layer lookup tables (``additive``, and ``lut`` where layers were measured)
and their learned correction (``hybrid``), so ``auto`` picks a lookup table wherever no
learned model beats it in CV.  The score is the user's metric (``within10`` by default,
the project's goal; ``tau`` for ranking, which is what a search needs; ``mape``); the
others break ties.
"""
from __future__ import annotations

import logging

import numpy as np

from hwnas.errors import DataError, PredictorError, valid_list
from hwnas.predictors._metrics import regression_metrics
from hwnas.predictors._registry import create_predictor

log = logging.getLogger(__name__)

#: label -> (model, parameters) that ``auto`` compares; ``lut`` joins where a layer table exists
AUTO_CANDIDATES: dict[str, tuple[str, dict]] = {
    "additive": ("additive", {}),
    "ridge": ("ridge", {"log_target": True}),
    "ridge:raw": ("ridge", {"log_target": False}),
    "gbr": ("gbr", {}),
    "xgb": ("xgb", {}),
    "mlp": ("mlp", {}),
    "ensemble": ("ensemble", {}),
    "hybrid": ("hybrid", {}),
}
#: ``auto``'s order of simplicity for the one-standard-error rule: tables first, then linear
#: models, then trees and networks (ties within the rule go to the earlier one)
SIMPLICITY = ("lut", "additive", "ridge", "ridge:raw", "gbr", "xgb", "ensemble", "hybrid", "mlp")
#: metric name (``--metric``, ``profile --until``) -> (key of ``regression_metrics``, larger is better)
METRICS = {"within10": ("within_10", True), "within5": ("within_5", True), "tau": ("kendall_tau", True),
           "mape": ("mape", False)}


def candidate(label: str, table: dict | None = None) -> tuple[str, dict]:
    """``(model, params)`` of an ``auto`` candidate label; ``lut`` and ``hybrid`` get the table."""
    if label == "lut":
        return "lut", {"table": table}
    try:
        model, params = AUTO_CANDIDATES[label]
    except KeyError:
        raise PredictorError(f"unknown auto candidate {label!r}; valid: {valid_list([*AUTO_CANDIDATES, 'lut'])}") from None
    params = dict(params)
    if model == "hybrid" and table:
        params["table"] = table
    return model, params


def metric_key(metric: str) -> tuple[str, bool]:
    try:
        return METRICS[metric]
    except KeyError:
        raise PredictorError(f"unknown metric {metric!r}; valid: {valid_list(METRICS)}") from None


def kfold_rows(n: int, folds: int, seed: int):
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}")
    if n < folds:
        raise DataError(f"too little data for {folds}-fold cross-validation: {n} archs (need at least {folds})")
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    for k in range(folds):
        yield np.concatenate([p for i, p in enumerate(parts) if i != k]), parts[k]


def cross_validate(name: str, space, archs, latency_ms, *, folds: int = 5, seed: int = 0, **params) -> dict:
    """Mean of ``regression_metrics`` over the folds, and ``<metric>_se``: its standard error
    (the folds' standard deviation over sqrt(folds))."""
    archs = list(archs)
    y = np.asarray(latency_ms, dtype=np.float64)
    scores = []
    for tr, te in kfold_rows(len(archs), folds, seed):
        p = create_predictor(name, space, seed=seed, **params).fit([archs[i] for i in tr], y[tr], uncertainty=False)
        scores.append(regression_metrics(y[te], p.predict([archs[i] for i in te])))
    keys = [k for k in scores[0] if k != "n"]
    out = {k: float(np.nanmean([s[k] for s in scores])) for k in keys}
    out.update({f"{k}_se": float(np.nanstd([s[k] for s in scores], ddof=1) / np.sqrt(len(scores))) for k in keys})
    return out


def select_model(space, archs, latency_ms, *, candidates=None, folds: int = 5, seed: int = 0,
                 metric: str = "within10", table: dict | None = None, on_result=None) -> tuple[str, dict[str, dict]]:
    """``(best candidate label, {label: mean CV metrics})``; ``candidate(label)`` builds it."""
    key, larger = metric_key(metric)
    labels = list(candidates or AUTO_CANDIDATES)
    if table and "lut" not in labels:
        labels.insert(0, "lut")
    table_rows = {}
    for label in labels:
        model, params = candidate(label, table)
        table_rows[label] = cross_validate(model, space, archs, latency_ms, folds=folds, seed=seed, **params)
        log.info("cv %s: %s", label, table_rows[label])
        if on_result is not None:
            on_result(label, table_rows[label])

    def score(label):
        m = table_rows[label]
        main = np.nan_to_num(m[key], nan=-np.inf if larger else np.inf)
        return (main if larger else -main, np.nan_to_num(m["kendall_tau"], nan=-1), m["within_10"], -m["mape"])

    best = max(labels, key=score)
    # the one-standard-error rule (Breiman et al. 1984, CART; Hastie et al., ESL 7.10): the first
    # candidate, in order of simplicity, whose CV score is within one standard error of the best
    bar = score(best)[0] - np.nan_to_num(table_rows[best][f"{key}_se"], nan=0.0)
    simple_first = sorted(labels, key=lambda lb: SIMPLICITY.index(lb) if lb in SIMPLICITY else len(SIMPLICITY))
    return next(lb for lb in simple_first if score(lb)[0] >= bar), table_rows
