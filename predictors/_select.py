"""``auto``: pick the model by k-fold cross-validation on the training split.

Why CV on the training split only: the held-out split then stays an honest estimate of
the chosen model (selecting on it would bias the reported metrics upward).  The score is
the mean share within +-10% (the project's goal metric), Kendall tau breaks ties.
"""
from __future__ import annotations

import logging

import numpy as np

from hwnas.errors import DataError
from hwnas.predictors._metrics import regression_metrics
from hwnas.predictors._registry import create_predictor

log = logging.getLogger(__name__)

#: models ``auto`` compares (``lut`` needs a layer table, ``ensemble`` is 5x an MLP)
AUTO_CANDIDATES = ("ridge", "gbr", "rf", "xgb", "mlp")


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
    """Mean of ``regression_metrics`` over the folds (predictions pooled per fold)."""
    archs = list(archs)
    y = np.asarray(latency_ms, dtype=np.float64)
    scores = []
    for tr, te in kfold_rows(len(archs), folds, seed):
        p = create_predictor(name, space, seed=seed, **params).fit([archs[i] for i in tr], y[tr])
        scores.append(regression_metrics(y[te], p.predict([archs[i] for i in te])))
    return {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0] if k != "n"}


def select_model(space, archs, latency_ms, *, candidates=AUTO_CANDIDATES, folds: int = 5, seed: int = 0,
                 on_result=None) -> tuple[str, dict[str, dict]]:
    """``(best model name, {name: mean CV metrics})``."""
    table = {}
    for name in candidates:
        table[name] = cross_validate(name, space, archs, latency_ms, folds=folds, seed=seed)
        log.info("cv %s: %s", name, table[name])
        if on_result is not None:
            on_result(name, table[name])
    best = max(table, key=lambda n: (table[n]["within_10"], np.nan_to_num(table[n]["kendall_tau"], nan=-1)))
    return best, table
