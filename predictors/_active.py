"""Active profiling: which architectures to measure next.

Measure where the predictor is least sure (uncertainty sampling; for regression with a
committee, query-by-committee, Seung et al. 1992, Burbidge et al. 2007).  The score is the
*relative* spread ``std / mean`` of the prediction, because accuracy is judged relative to
latency (within +-10%): an absolute std would always favour the slowest archs.

- models with members (``has_spread``: ``mlp``, ``ensemble``, ``rf``) use their spread
  (``predict_spread``), not the calibrated ``predict_with_std``, whose log-scale residuals
  are the same for every arch and so cannot say where to measure;
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
    if predictor.has_spread:
        mean, std = predictor.predict_spread(candidates)
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
        m = predictor.clone()
        m.fit([archs[i] for i in rows], y[rows], uncertainty=False)
        members.append(m)
    return members
