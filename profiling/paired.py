"""Paired timing: each arch in alternation with the canary, the ratio as the measurement.

Protocol (DESIGN.md, "Measurement protocol"): the canary's session is opened once and stays
open for the whole campaign; each arch gets a fresh session; both are warmed up, then the
timed runs alternate arch, canary, canary, arch, arch, canary, ... (the order flips every
pair so that neither model always runs on the other's warm caches).  A pair's two runs are
microseconds to milliseconds apart, far inside the seconds-long speed phases of a shared
host (``benchmarks/results/profiling_phases.md``), so the per-pair ratio cancels the
host's speed of that moment; the row stores the raw statistics of both models, every ratio
estimator, and ``latency_ms = ratio x the device's canary reference``
(``hwnas.profiling.canary``), the ratio first decompressed by the device's state constant
where the host's contended state compresses ratios (``hwnas.profiling.contention``).  The
canary's own median at that moment is the machine's speed factor, which ``hwnas data show``
/ ``drift`` report.

On CUDA both sessions use IO binding with device-resident inputs and outputs and each run
is synchronised (``hwnas.profiling.runner._Runner``), so the pairing is the same there.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from hwnas.errors import ProfilingError
from hwnas.profiling.runner import MIN_BUDGET_RUNS, Measurement, first_run, open_model, summarize_runs
from hwnas.profiling.stats import DEFAULT_RATIO_ESTIMATOR, ratio_estimates, summarize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairedMeasurement:
    """One arch timed against the canary: the arch's raw statistics, the canary's median
    and spread during the same runs, and the ratio estimates."""

    arch: Measurement
    canary_median_ms: float
    canary_p10_ms: float
    canary_p90_ms: float
    ratio: float  # the DEFAULT_RATIO_ESTIMATOR estimate
    estimates: dict
    pairs: int
    canary_total_ms: float  # time spent in timed canary runs (the protocol's cost)

    def to_dict(self) -> dict:
        return asdict(self)


class PairedTimer:
    """Holds the canary's session open and times archs against it (``measure``).

    One timer per process and context: a campaign, an export's final check, a Ray task.
    """

    def __init__(self, canary_onnx: bytes, *, ep: str = "cpu", threads: int = 1, warmup: int = 10,
                 allow_fallback: bool = False, batch_size: int | None = None, ep_options: dict | None = None,
                 cache_dir: str | None = None):
        if warmup < 0:
            raise ProfilingError(f"warmup must be >= 0, got {warmup}")
        self._kw = dict(ep=ep, threads=threads, allow_fallback=allow_fallback, batch_size=batch_size,
                        ep_options=ep_options, cache_dir=cache_dir)
        self.ep, self.threads, self.warmup = ep, threads, warmup
        try:
            self._canary = open_model(canary_onnx, **self._kw)
        except ProfilingError as e:
            raise ProfilingError(f"the canary failed to load: {e}") from e
        first_run(self._canary)
        for _ in range(max(warmup - 1, 0)):
            self._canary.runner.run()

    @property
    def ep_used(self) -> str:
        return self._canary.ep_used

    def measure(self, model, *, runs: int | None = 50, time_budget_s: float | None = None) -> PairedMeasurement:
        """Time ``model`` (ONNX bytes) in a fresh session against the open canary."""
        if time_budget_s is None and (runs is None or runs < 1):
            raise ProfilingError(f"runs must be >= 1 (or give time_budget_s), got {runs}")
        opened = open_model(model, **self._kw)
        if opened.ep_used != self.ep_used:
            raise ProfilingError(f"the arch runs on {opened.ep_used} but the canary on {self.ep_used}; "
                                 "a ratio across providers means nothing")
        arch_run, canary_run = opened.runner.run, self._canary.runner.run
        first_ms = first_run(opened)
        for _ in range(max(self.warmup - 1, 0)):
            arch_run()
            canary_run()
        perf, cpu_clock = time.perf_counter, time.thread_time
        a_times, c_times, cpu = [], [], []
        spent = 0.0
        while (len(a_times) < runs) if time_budget_s is None else (spent < time_budget_s
                                                                    or len(a_times) < MIN_BUDGET_RUNS):
            canary_first = len(a_times) % 2 == 1  # flip the order every pair
            if canary_first:
                c_times.append(_timed(canary_run, perf))
            c0 = cpu_clock()
            dt = _timed(arch_run, perf)
            cpu.append(cpu_clock() - c0)
            a_times.append(dt)
            spent += dt
            if not canary_first:
                c_times.append(_timed(canary_run, perf))
        arch = summarize_runs(opened, a_times, cpu, ep=self.ep, threads=self.threads, warmup=self.warmup,
                              first_run_ms=first_ms)
        a_ms, c_ms = [t * 1e3 for t in a_times], [t * 1e3 for t in c_times]
        est = ratio_estimates(a_ms, c_ms)
        est.update(cache_context_ratios(a_ms, c_ms))
        cst = summarize(c_ms)
        return PairedMeasurement(arch=arch, canary_median_ms=cst.median_ms, canary_p10_ms=cst.p10_ms,
                                 canary_p90_ms=cst.p90_ms, ratio=est[DEFAULT_RATIO_ESTIMATOR], estimates=est,
                                 pairs=len(a_times), canary_total_ms=float(sum(c_ms)))


def cache_context_ratios(arch_ms, canary_ms) -> dict[str, float]:
    """The ratio of runs that followed the same model (``warm_median_of_ratios``) and of runs
    that followed the other one (``cold_median_of_ratios``), from ``PairedTimer``'s order.

    Why: below a millisecond, what ran just before a model changes its time.  On tiny at 32
    (0.1-0.6 ms), a round-robin loop that runs each file once per visit and one that runs it
    twice and times the second agree only 42-48% within 5% in relative latency, 1.13x apart
    in log-log slope (``benchmarks/results/independent_m1.md``).  The flipped order
    (a c | c a | a c | ...) puts one run after the same model and one after the other in every
    pair: pair i >= 2 even has a warm arch run (after pair i-1's arch), pair i odd a warm
    canary run (after pair i-1's canary).  Pairing each warm arch run with the warm canary
    run next to it (pair i-1) keeps the pairing that cancels the host's speed and gives the
    steady-state ratio, the context of the calibration, where the canary runs alone; the
    cold runs pair the same way.  Pair 0 is left out: what precedes it depends on the warm-up.
    Fewer than two such pairs: the key is absent.  Stored beside the default, not instead of
    it: the warm ratio matches the steady-state loop's scale (slope 0.985 against 0.971 for
    ``median_of_ratios``) but, from half the pairs, repeats less (73% against 77% within 5%).
    """
    a = np.asarray(arch_ms, dtype=np.float64)
    c = np.asarray(canary_ms, dtype=np.float64)
    out = {}
    warm_a, warm_c = a[2::2], c[1::2]  # pair 2k's arch after pair 2k-1's arch; pair 2k-1's canary after 2k-2's
    n = min(warm_a.size, warm_c.size)
    if n >= 2:
        out["warm_median_of_ratios"] = float(np.median(warm_a[:n] / warm_c[:n]))
    cold_a, cold_c = a[1::2], c[2::2]  # pair 2k-1's arch after its canary; pair 2k's canary after its arch
    n = min(cold_a.size, cold_c.size)
    if n >= 2:
        out["cold_median_of_ratios"] = float(np.median(cold_a[:n] / cold_c[:n]))
    return out


def median_session(sessions: list[PairedMeasurement], ratios: list[float] | None = None) -> int:
    """Index of the session of the median ratio (the lower of the two middle ones of an
    even count), so that its raw statistics stay those of one real session.  ``ratios``
    ranks by other per-session values (the decompressed ratios of a final check)."""
    key = ratios if ratios is not None else [s.ratio for s in sessions]
    return sorted(range(len(sessions)), key=key.__getitem__)[(len(sessions) - 1) // 2]


def _timed(run, perf) -> float:
    t0 = perf()
    run()
    return perf() - t0
