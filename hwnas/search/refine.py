"""Region refinement (``hwnas search --refine N``): measure where the search ended, correct
the predictor there, and pick the final arch again.

Why: a search goes where the predictor is optimistic, so its picks are the archs the
predictor errs on most (the winner's curse).  On the search benchmark's 25 runs
(``benchmarks/results/search_m1_retime*.md``) the measurements repeated (stored archs
re-timed at 1.002x), yet the final archs measured within +-10% of their prediction for only
80-88%, and every predictor model did worse on the picks (64-88%) than on random held-out
archs (82-94%).  The error is local, and a few measurements where the run ended fix it:
before the final pick, the run times the ``N`` most accurate of its scored candidates whose
prediction lies within ``REGION_SLACK`` of the budget (the archs a pick can land on), with
the predictor's own protocol (its data's canary and reference, ``hwnas.profiling.protocol``),
and fits the few-shot adaptation (``hwnas.predictors._adapt``: log latency = a + b log base
+ per-layer corrections, ridge priors at the base chosen by leave-one-out).  The final pick,
the per-budget picks and the Pareto front then use the adapted costs; everything else in the
run (the search itself, its rewards) used the base predictor.

The search's own first choice is left out of the fit, so its refined prediction is
out-of-sample; when the new pick is one of the measured archs, ``final_in_fit`` says so (its
prediction is then in-sample).  The adapted predictor's leave-one-out error over the region
is the honest error estimate there (``loo``).  What it gave: the search benchmark's 25 runs
repeated with ``--refine 16`` measured within +-10% of the prediction for 100% of the refined
picks (88% within +-5%) against 88% (56%) for the base pick, 100% also for the 24 picks that
were not among the measured archs; leave-one-out MAPE median 3.1%
(``benchmarks/results/region_refine_m1.md``).
"""
from __future__ import annotations

import dataclasses
import logging
import statistics

from hwnas.errors import SearchError

logger = logging.getLogger(__name__)

#: candidates whose base prediction is at most budget x (1 + REGION_SLACK) form the region:
#: the archs the predictor may have put just over the budget by its error are the ones an
#: adapted prediction can let in
REGION_SLACK = 0.15


@dataclasses.dataclass(frozen=True)
class Refinement:
    """What ``--refine`` measured and what it changed (``result.json`` "refine")."""

    measured: tuple[dict, ...]  # per arch: arch, base_ms (the base prediction), measured_ms
    loo: dict  # the adapted predictor's leave-one-out metrics on the measured archs
    speed_factor: float  # median canary speed of the measurements vs the reference
    base_final: str  # the final arch by the base predictor
    base_final_ms: float
    final_in_fit: bool = False  # the refined pick is one of the measured archs (in-sample)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def region(points, budget: float, n: int, exclude: str) -> list[str]:
    """The ``n`` most accurate scored candidates (ties: cheaper first) whose cost is at most
    ``budget x (1 + REGION_SLACK)``, ``exclude`` (the base final) left out."""
    near = [p for p in points if p.cost <= budget * (1 + REGION_SLACK) and p.arch != exclude]
    near.sort(key=lambda p: (-p.acc, p.cost))
    return [p.arch for p in near[:n]]


def adapt_to_region(space, predictor, archs: list[str], resolution: int | None, *, ep: str = "cpu",
                    threads: int = 1, runs: int = 50, sessions: int = 1):
    """Time ``archs`` as the predictor's data were timed and fit the adapted predictor:
    (adapted, [{"arch", "base_ms", "measured_ms"}], median speed factor)."""
    import numpy as np

    from hwnas.predictors._adapt import MIN_SAMPLES, adapt_predictor
    from hwnas.predictors._data import LatencyData
    from hwnas.profiling.protocol import DataTimer, warn_if_drifted

    if len(archs) < MIN_SAMPLES:
        raise SearchError(f"--refine found {len(archs)} scored candidates within {REGION_SLACK:.0%} of the budget; "
                          f"adapting needs at least {MIN_SAMPLES}: loosen the budget or run without --refine")
    timer = DataTimer(space, predictor.fingerprint, resolution, ep=ep, threads=threads)
    base_ms = predictor.predict(archs)
    measured, speeds = [], []
    for arch, b in zip(archs, base_ms):
        m = timer.measure(arch, runs=runs, sessions=sessions)
        measured.append({"arch": arch, "base_ms": float(b), "measured_ms": float(m.latency_ms)})
        speeds.append(m.speed_factor)
        logger.info("refine: %s predicted %.4f ms, measured %.4f ms", arch, b, m.latency_ms)
    speed = statistics.median(speeds)
    if timer.reference.source == "predictor":  # once for the region, not once per arch
        warn_if_drifted(speed, timer.reference.reference_ms)
    data = LatencyData(space.name, tuple(archs), np.array([r["measured_ms"] for r in measured]),
                       device_id=predictor.device_id, fingerprint=predictor.fingerprint,
                       source="search --refine", device_name=predictor.device_name)
    adapted = adapt_predictor(predictor, data, seed=predictor.seed)
    return adapted, measured, speed
