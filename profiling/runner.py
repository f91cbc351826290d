"""Measure one ONNX model with ONNX Runtime: warm-up, timed runs, statistics.

Protocol (DESIGN.md): a fresh ``InferenceSession`` with explicit options, fixed input
shape, warm-up runs discarded, then timed runs until a count or a time budget is met;
the median is the statistic that is stored.  On CPU each timed run is a plain
``session.run``.  On CUDA the input and a pre-allocated output live on the GPU and are
bound with IO binding, and the timed region is ``run_with_iobinding`` followed by
``synchronize_outputs``, so host<->device copies are not timed (ONNX Runtime docs,
"I/O Binding").  With TensorRT the engine is built at session creation / first run
(cached on disk with ``trt_engine_cache_enable``); that build time is reported as
``engine_build_ms``, apart from the latency.

Repeats (``repeats=R``): R fresh sessions, and the reported statistics are those of the
session with the *lowest* median.  Why the minimum: on a shared (virtualised) host the whole
vCPU runs 1.2-1.8x slower for seconds at a time (``benchmarks/results/profiling_phases.md``);
inside one session the timed runs are tight, so no in-session statistic removes it, and the
median of fresh-session medians is bimodal.  Contention only ever *adds* time, so the lowest
session median estimates the uncontended latency of the device, in the spirit of the
"minimum of repeated timings" advice of Python's ``timeit`` and of Chen & Revels, "Robust
benchmarking in noisy environments" (arXiv:1608.04295), who show that timing noise is
right-skewed and additive, so that the minimum is the most stable estimator.  Back to back
the R sessions can share one slow phase; a campaign spreads them in time instead
(``hwnas.profiling.campaign``).  This is the plain protocol (``--no-canary``); the default
times each arch against a canary (``hwnas.profiling.paired``), built on ``open_model`` and
``summarize_runs`` here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hwnas.errors import ProfilingError
from hwnas.profiling.providers import open_session
from hwnas.profiling.stats import summarize

logger = logging.getLogger(__name__)

MIN_BUDGET_RUNS = 5


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    ep: str  # requested execution provider
    ep_used: str  # the one that actually ran
    fallback: bool
    session_ms: float  # session creation (graph optimisation; TensorRT engine build)
    first_run_ms: float  # first (warm-up) run: lazy allocation, TensorRT build on dynamic shapes
    timed_total_ms: float  # sum of the timed runs
    threads: int
    batch_size: int
    fallback_reason: str | None = None
    engine_build_ms: float | None = None  # TensorRT only: session_ms + first_run_ms
    cpu_median_ms: float | None = None  # CPU EP, 1 thread: median CPU time of the calling thread
    repeats: int = 1  # fresh sessions measured; the statistics are those of the lowest-median one
    session_medians_ms: tuple[float, ...] | None = None  # every session's median, in time order (repeats > 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _load_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, Path)):
        try:
            return Path(model).read_bytes()
        except OSError as e:
            raise ProfilingError(f"cannot read ONNX file {str(model)!r}: {e}") from e
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise ProfilingError(f"model must be an onnx.ModelProto, bytes or a path, got {type(model).__name__}")


def _input_feed(sess, batch_size: int | None) -> tuple[dict[str, np.ndarray], int]:
    """Seeded random inputs of the session's fixed shapes (symbolic dims -> batch size)."""
    rng = np.random.default_rng(0)
    feed, batch = {}, None
    for inp in sess.get_inputs():
        shape = list(inp.shape)
        if shape and not isinstance(shape[0], int):
            shape[0] = batch_size or 1
        elif shape and batch_size is not None and shape[0] != batch_size:
            raise ProfilingError(f"input {inp.name!r} has a fixed batch of {shape[0]}, but batch_size={batch_size}; "
                                 "export the model with that batch or with a dynamic batch")
        if any(not isinstance(d, int) for d in shape[1:]):
            raise ProfilingError(f"input {inp.name!r} has symbolic dims {inp.shape}; only the batch may be dynamic")
        if inp.type != "tensor(float)":
            raise ProfilingError(f"input {inp.name!r} is {inp.type}; only float32 inputs are supported")
        feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        batch = batch or (shape[0] if shape else 1)
    return feed, batch or 1


class _Runner:
    """One callable ``run()`` per provider kind, with what must stay out of the timing
    prepared in ``__init__``."""

    def __init__(self, sess, feed: dict, batch: int, ep_used: str):
        if ep_used == "cpu":
            self.run = lambda: sess.run(None, feed)
            return
        import onnxruntime as ort

        io = sess.io_binding()
        self._keep = []  # OrtValues must outlive the binding
        for name, x in feed.items():
            v = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            self._keep.append(v)
            io.bind_ortvalue_input(name, v)
        for out in sess.get_outputs():
            shape = [d if isinstance(d, int) else batch for d in out.shape]
            v = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            self._keep.append(v)
            io.bind_ortvalue_output(out.name, v)
        io.synchronize_inputs()

        def run():
            sess.run_with_iobinding(io)
            io.synchronize_outputs()

        self.run = run


def measure(model, *, ep: str = "cpu", threads: int = 1, warmup: int = 10, runs: int | None = 50,
            time_budget_s: float | None = None, allow_fallback: bool = False, batch_size: int | None = None,
            ep_options: dict | None = None, cache_dir: str | None = None, repeats: int = 1,
            gap_s: float = 0.0) -> Measurement:
    """Measure ``model`` (ModelProto, serialized bytes or a path) in a fresh session.

    ``repeats`` > 1: that many fresh sessions, ``gap_s`` seconds apart (a pause lets them
    fall in different phases of a shared host, as a campaign's rounds do); the result is the
    session with the lowest median (see the module docstring), with ``session_medians_ms``
    listing all of them.  ``runs`` timed runs, or with ``time_budget_s`` timed runs until that much inference
    time has been spent (at least 5; ``runs`` is then ignored).  A GPU provider that cannot
    load raises ``ProfilingError`` with the reason, unless ``allow_fallback``: then it runs
    on the CPU, logs a WARNING, and the result says ``fallback=True``.
    """
    if warmup < 0:
        raise ProfilingError(f"warmup must be >= 0, got {warmup}")
    if time_budget_s is None and (runs is None or runs < 1):
        raise ProfilingError(f"runs must be >= 1 (or give time_budget_s), got {runs}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ProfilingError(f"time_budget_s must be > 0, got {time_budget_s}")
    if repeats < 1 or gap_s < 0:
        raise ProfilingError(f"need repeats >= 1 and gap_s >= 0, got repeats={repeats}, gap_s={gap_s}")
    data = _load_bytes(model)
    kw = dict(ep=ep, threads=threads, warmup=warmup, runs=runs, time_budget_s=time_budget_s,
              allow_fallback=allow_fallback, batch_size=batch_size, ep_options=ep_options, cache_dir=cache_dir)
    if repeats == 1:
        return _measure_once(data, **kw)
    sessions = []
    for i in range(repeats):
        if i and gap_s:
            time.sleep(gap_s)
        sessions.append(_measure_once(data, **kw))
    return combine_sessions(sessions)


def combine_sessions(sessions: list[Measurement]) -> Measurement:
    """The lowest-median session of ``sessions`` (in time order), with every median kept."""
    if not sessions:
        raise ProfilingError("no session to combine")
    best = min(sessions, key=lambda m: m.median_ms)
    return replace(best, repeats=len(sessions), session_medians_ms=tuple(m.median_ms for m in sessions))


@dataclass
class OpenModel:
    """A session ready to time: the provider it really runs on, its creation time, the
    prepared ``run()`` (IO binding set up outside the timing) and the batch it feeds."""

    sess: object
    choice: object
    session_ms: float
    runner: _Runner
    batch: int

    @property
    def ep_used(self) -> str:
        return self.choice.ep_used


def open_model(data: bytes, *, ep, threads, allow_fallback=False, batch_size=None, ep_options=None,
               cache_dir=None) -> OpenModel:
    """Open ``data`` on ``ep`` and prepare its timed call (the runner's and the paired timer's
    one way in)."""
    sess, choice, session_ms = open_session(data, ep, threads=threads, allow_fallback=allow_fallback,
                                            ep_options=ep_options, cache_dir=cache_dir)
    feed, batch = _input_feed(sess, batch_size)
    return OpenModel(sess, choice, session_ms, _Runner(sess, feed, batch, choice.ep_used), batch)


def first_run(opened: OpenModel) -> float:
    """The first (warm-up) run; its time is reported (lazy init, TensorRT build), not kept."""
    t0 = time.perf_counter()
    opened.runner.run()
    return (time.perf_counter() - t0) * 1e3


def summarize_runs(opened: OpenModel, times_s, cpu_s, *, ep: str, threads: int, warmup: int,
                   first_run_ms: float) -> Measurement:
    """The ``Measurement`` of one session's timed runs."""
    times_ms = np.asarray(times_s) * 1e3
    # with one intra-op thread the CPU EP computes in the calling thread, so its CPU time
    # is the work done without the time the OS had us descheduled: a diagnostic of how
    # much of the wall-clock noise comes from other processes (not the stored latency)
    cpu_med = float(np.median(cpu_s) * 1e3) if cpu_s and opened.ep_used == "cpu" and threads == 1 else None
    st = summarize(times_ms)
    choice = opened.choice
    return Measurement(
        median_ms=st.median_ms, mean_ms=st.mean_ms, std_ms=st.std_ms, p10_ms=st.p10_ms, p90_ms=st.p90_ms,
        runs=st.runs, warmup=int(warmup), ep=ep, ep_used=choice.ep_used, fallback=choice.fallback,
        session_ms=opened.session_ms, first_run_ms=first_run_ms, timed_total_ms=float(times_ms.sum()),
        threads=int(threads), batch_size=int(opened.batch), fallback_reason=choice.reason,
        engine_build_ms=(opened.session_ms + first_run_ms) if choice.ep_used == "tensorrt" else None,
        cpu_median_ms=cpu_med,
    )


def _measure_once(data: bytes, *, ep, threads, warmup, runs, time_budget_s, allow_fallback, batch_size,
                  ep_options, cache_dir) -> Measurement:
    opened = open_model(data, ep=ep, threads=threads, allow_fallback=allow_fallback, batch_size=batch_size,
                        ep_options=ep_options, cache_dir=cache_dir)
    run = opened.runner.run
    first_run_ms = first_run(opened)
    for _ in range(max(warmup - 1, 0)):
        run()
    times, cpu = [], []
    perf, cpu_clock = time.perf_counter, time.thread_time
    spent = 0.0
    while (len(times) < runs) if time_budget_s is None else (spent < time_budget_s or len(times) < MIN_BUDGET_RUNS):
        c0 = cpu_clock()
        t0 = perf()
        run()
        dt = perf() - t0
        cpu.append(cpu_clock() - c0)
        times.append(dt)
        spent += dt
    return summarize_runs(opened, times, cpu, ep=ep, threads=threads, warmup=warmup, first_run_ms=first_run_ms)
