"""Active profiling: which architectures to measure next.

Measure where the predictor is least sure (uncertainty sampling; for regression with a
committee, query-by-committee, Seung et al. 1992, Burbidge et al. 2007).  The score is the
*relative* spread ``std / mean`` of the prediction, because accuracy is judged relative to
latency (within +-10%): an absolute std would always favour the slowest archs.

- models with ``predict_with_std`` (``ensemble``, ``rf``) use their own spread;
- any other model gets a committee: ``n_committee`` copies of it refitted on bootstrap
  resamples of its own training set (stored in the predictor), whose disagreement is the
  score.  ``lut`` has (almost) no disagreement to offer: its only fitted number is a
  constant, so its picks are close to candidate order.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import PredictorError


def uncertainty(predictor, candidates, n_committee: int = 5, seed: int = 0) -> np.ndarray:
    """Relative predictive spread (std / mean) of each candidate."""
    if predictor.supports_std:
        mean, std = predictor.predict_with_std(candidates)
    else:
        preds = np.stack([m.predict(candidates) for m in _committee(predictor, n_committee, seed)])
        mean, std = preds.mean(0), preds.std(0)
    return std / np.maximum(mean, 1e-12)


def select_uncertain(predictor, candidates, k: int, *, n_committee: int = 5, seed: int = 0) -> list:
    """The ``k`` candidates (Archs) with the largest relative predictive spread, largest first.

    Duplicates are counted once; ``k`` larger than the pool returns the whole pool, ranked.
    """
    predictor._check_fitted()
    if int(k) < 0:
        raise PredictorError(f"k must be >= 0, got {k}")
    pool = list(dict.fromkeys(predictor.space.parse(c) for c in candidates))
    if not pool or k == 0:
        return []
    score = uncertainty(predictor, pool, n_committee, seed)
    order = np.argsort(-score, kind="stable")[: int(k)]
    return [pool[i] for i in order]


def _committee(predictor, n: int, seed: int):
    archs, y = list(predictor.train_archs_), np.asarray(predictor.train_latency_ms_)
    if len(archs) < 2:
        raise PredictorError("the predictor holds no training set to build a committee from")
    rng = np.random.default_rng(seed)
    members = []
    for _ in range(n):
        rows = rng.integers(len(archs), size=len(archs))
        m = clone(predictor)
        m.fit([archs[i] for i in rows], y[rows])
        members.append(m)
    return members


def clone(predictor):
    """An unfitted copy with the same hyper-parameters (the LUT keeps its table)."""
    params = predictor.get_params()
    if predictor.name == "lut":
        params["table"] = predictor.table_
    return type(predictor)(predictor.space, **params)
