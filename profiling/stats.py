"""Summary statistics of timed runs.

Why the median: run times on a shared machine have a heavy right tail (interrupts,
frequency changes, other processes); the median is the statistic that stays put when a
few runs are slow, so it is what the store and the predictors use.  Mean, standard
deviation and the 10th/90th percentiles are kept beside it so noise can be judged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.errors import ProfilingError


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1; 0 for one run)
    p10_ms: float
    p90_ms: float
    runs: int

    @property
    def cv(self) -> float:
        """Coefficient of variation of the runs (std / mean)."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else float("nan")


def summarize(times_ms) -> LatencyStats:
    """Median, mean, std, p10 and p90 of a sequence of run times in milliseconds."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ProfilingError(f"need at least one timed run, got {t.size}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ProfilingError("run times must be finite and non-negative")
    p10, med, p90 = np.percentile(t, [10, 50, 90])
    return LatencyStats(
        median_ms=float(med),
        mean_ms=float(t.mean()),
        std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        p10_ms=float(p10),
        p90_ms=float(p90),
        runs=int(t.size),
    )


RATIO_ESTIMATORS = ("median_of_ratios", "ratio_of_medians", "trimmed_mean_of_ratios")
# the estimator stored as a row's ``ratio``; benchmarks/canary_bench.py compares all three
DEFAULT_RATIO_ESTIMATOR = "median_of_ratios"
TRIM = 0.2


def ratio_estimates(arch_ms, canary_ms) -> dict[str, float]:
    """Estimates of latency(arch) / latency(canary) from runs timed in alternation.

    ``arch_ms[i]`` and ``canary_ms[i]`` are neighbours in time, so they share the host's
    speed of that moment: their ratio cancels it.  ``median_of_ratios`` (the median of the
    per-pair ratios) keeps that pairing and ignores the pairs that an interrupt hit on one
    side only; ``ratio_of_medians`` drops the pairing (each median on its own, as two
    unpaired sessions would); ``trimmed_mean_of_ratios`` is the mean of the pair ratios
    without the lowest and highest ``TRIM`` share.
    """
    a = np.asarray(arch_ms, dtype=np.float64)
    c = np.asarray(canary_ms, dtype=np.float64)
    if a.shape != c.shape or a.ndim != 1 or a.size == 0:
        raise ProfilingError(f"need as many canary runs as arch runs, got {a.size} and {c.size}")
    if np.any(c <= 0) or np.any(a <= 0):
        raise ProfilingError("paired run times must be > 0")
    r = np.sort(a / c)
    k = int(TRIM * r.size)
    return {"median_of_ratios": float(np.median(r)),
            "ratio_of_medians": float(np.median(a) / np.median(c)),
            "trimmed_mean_of_ratios": float(r[k:r.size - k].mean() if r.size > 2 * k else r.mean())}
