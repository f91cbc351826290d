"""Active selection for ``hwnas profile --active``: measure where the predictor is least sure.

Why: a latency predictor improves most from the architectures it cannot yet predict
(uncertainty sampling, Settles 2009 "Active Learning Literature Survey", Sec. 3.1).  We
draw a candidate pool ``POOL_FACTOR`` times larger than asked (same sampler and seed
rules as a plain campaign, already-measured archs excluded) and keep the ``n`` that
``hwnas.predictors.select_uncertain`` ranks highest.
"""
from __future__ import annotations

from hwnas.errors import ProfilingError

POOL_FACTOR = 10


def pick_uncertain(space, predictor_path: str, n: int, *, sampler: str, seed: int, exclude,
                   resolution: int | None = None) -> list:
    from hwnas.profiling.sampling import sample_archs

    try:
        from hwnas.predictors import load_predictor, select_uncertain
    except ImportError as e:
        raise ProfilingError(f"--active needs hwnas.predictors (load_predictor, select_uncertain): {e}") from e
    pred = load_predictor(predictor_path, space=space)
    pool_n = min(max(POOL_FACTOR * n, 200), space.size() - len(set(exclude)))
    pool = sample_archs(space, pool_n, sampler=sampler, seed=seed, exclude=exclude, resolution=resolution)
    return list(select_uncertain(pred, pool, n))
