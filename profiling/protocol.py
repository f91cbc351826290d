"""One measurement protocol outside campaigns: export's final check, ``evaluate``, the search.

Why: "measured vs predicted vs budget" only compares like with like when the final
measurement is taken the way the predictor's training rows were: timed against the same
canary, and turned into milliseconds with the same reference.  ``measure_model`` does that
for any ONNX model of a known space and resolution; ``reference_for`` picks the reference:

- the predictor's (its training data's canary, carried in its fingerprint) when this
  machine is the device that measured those rows: then the measurement is on the very scale
  of the predictions and of a budget taken from them;
- otherwise a short calibration block here, and a warning with both fingerprints side by
  side: another machine is another device, and its numbers are this machine's.

The reference carries the device's state constant (``hwnas.profiling.contention``), and
each session's ratio is decompressed with it before the median is taken, as the training
rows were.  A quick block here has no probes, so its constant is 0 (plain ratio).

``device_drift`` is the check behind "this device changed since the predictor was trained":
the canary now, against the reference stored with the predictor.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from hwnas.errors import ProfilingError

logger = logging.getLogger(__name__)

QUICK_SESSIONS = 4  # calibration block of a one-off measurement (export, evaluate, drift check)
QUICK_GAP_S = 0.5
DRIFT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Reference:
    """The canary reference a measurement is scaled by, and where it came from."""

    canary_arch: str
    sha256: str
    reference_ms: float
    source: str  # "predictor" (the training data's device) or "calibrated here"
    device_id: str | None = None
    gamma: float = 0.0  # the state constant of the reference's calibration


@dataclass(frozen=True)
class ModelLatency:
    """A model timed against the canary: ``latency_ms = decompressed ratio x reference_ms``."""

    latency_ms: float
    ratio: float  # the chosen session's raw ratio (``latency_ms / reference_ms`` where gamma is 0)
    reference_ms: float
    reference_source: str
    canary: str
    canary_median_ms: float  # the canary's median during the chosen session
    speed_factor: float  # lowest canary median of the sessions / reference (1 = as calibrated)
    raw_median_ms: float  # the model's own median, unpaired
    session_ratios: tuple[float, ...]
    estimates: dict
    ep_used: str
    fallback: bool
    raw: dict  # the chosen session's raw statistics (``Measurement.to_dict()``)
    steal_share: float | None = None  # CPU steal during the sessions (``hwnas.profiling.steal``)
    gamma: float = 0.0  # the state constant the ratios were decompressed with

    @property
    def median_ms(self) -> float:  # the statistic callers printed before the canary
        return self.latency_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["median_ms"] = self.latency_ms
        # the raw spread, on the calibrated scale
        d["p10_ms"], d["p90_ms"] = (self.raw[k] * self.latency_ms / self.raw_median_ms for k in ("p10_ms", "p90_ms"))
        d.update({k: self.raw[k] for k in ("ep", "runs", "warmup", "batch_size")})
        return d


def same_machine(fp_a: dict | None, fp_b: dict | None) -> bool:
    """True when both fingerprints describe the same hardware (see ``hardware_diff``)."""
    from hwnas.profiling.fingerprint import hardware_diff

    return bool(fp_a) and bool(fp_b) and not hardware_diff(fp_a, fp_b)


def reference_for(canary, predictor_fp: dict | None, *, ep: str = "cpu", threads: int = 1,
                  allow_fallback: bool = False, warn: bool = True) -> Reference:
    """The reference to scale a measurement of ``canary``'s context by (module docstring)."""
    from hwnas.profiling.canary import calibrate
    from hwnas.profiling.contention import gamma_of
    from hwnas.profiling.fingerprint import describe_side_by_side, device_fingerprint

    here = device_fingerprint(ep, threads=threads)
    theirs = (predictor_fp or {}).get("canary")
    if theirs and theirs.get("sha256") == canary.sha256 and same_machine(predictor_fp, here):
        return Reference(canary.arch, canary.sha256, float(theirs["reference_ms"]), "predictor",
                         predictor_fp.get("device_id"), gamma_of(theirs))
    if warn and predictor_fp and not same_machine(predictor_fp, here):
        logger.warning("the predictor's data were measured on another device; this measurement is this "
                       "machine's own latency (calibrated here), so it may differ from the prediction:\n%s",
                       describe_side_by_side(predictor_fp, here))
    ref = calibrate(canary, ep=ep, threads=threads, sessions=QUICK_SESSIONS, gap_s=QUICK_GAP_S,
                    allow_fallback=allow_fallback)
    return Reference(canary.arch, canary.sha256, ref.reference_ms, "calibrated here", here.get("device_id"))


def measure_model(model_bytes: bytes, canary, reference: Reference, *, ep: str = "cpu", threads: int = 1,
                  warmup: int = 10, runs: int = 50, sessions: int = 3, gap_s: float = 0.5,
                  allow_fallback: bool = False, batch_size: int | None = None) -> ModelLatency:
    """``sessions`` paired sessions of the model against ``canary``, ``gap_s`` apart; the
    median session's ratio, decompressed with the reference's state constant, times the
    reference."""
    from hwnas.profiling.contention import decompress
    from hwnas.profiling.paired import PairedTimer, median_session
    from hwnas.profiling.steal import StealMeter

    if sessions < 1 or runs < 1:
        raise ProfilingError(f"need sessions >= 1 and runs >= 1, got {sessions} and {runs}")
    if reference.sha256 != canary.sha256:
        raise ProfilingError("the reference was measured on another canary graph than the one given")
    timer = PairedTimer(canary.onnx, ep=ep, threads=threads, warmup=warmup, allow_fallback=allow_fallback,
                        batch_size=batch_size)
    steal = StealMeter()
    ms = []
    for i in range(sessions):
        if i and gap_s:
            time.sleep(gap_s)
        ms.append(timer.measure(model_bytes, runs=runs))
    ratios = [m.ratio for m in ms]
    state = [decompress(m.ratio, m.canary_median_ms / reference.reference_ms, reference.gamma) for m in ms]
    pick = median_session(ms, state)
    chosen = ms[pick]
    raw = chosen.arch
    return ModelLatency(latency_ms=state[pick] * reference.reference_ms, ratio=chosen.ratio,
                        reference_ms=reference.reference_ms, reference_source=reference.source,
                        canary=canary.arch, canary_median_ms=chosen.canary_median_ms,
                        speed_factor=min(m.canary_median_ms for m in ms) / reference.reference_ms,
                        raw_median_ms=raw.median_ms, session_ratios=tuple(ratios), estimates=chosen.estimates,
                        ep_used=raw.ep_used, fallback=raw.fallback, raw=raw.to_dict(), steal_share=steal.share(),
                        gamma=reference.gamma)


def data_canary(space: str, resolution: int | None, predictor_fp: dict | None, *, ep: str = "cpu",
                threads: int = 1, allow_fallback: bool = False, batch_size: int = 1):
    """(canary, ``Reference``) that a predictor's training rows were timed against: that data's
    canary arch (the default rule's where the predictor carries none), and the data's
    reference when this machine measured them, else one calibrated here (``reference_for``).
    Build it once to time several models alike (``hwnas.measured_pick``)."""
    from hwnas.profiling.canary import build_canary

    theirs = (predictor_fp or {}).get("canary") or {}
    canary = build_canary(space, arch=theirs.get("arch"), resolution=resolution, batch_size=batch_size)
    return canary, reference_for(canary, predictor_fp, ep=ep, threads=threads, allow_fallback=allow_fallback)


class DataTimer:
    """Times archs of ``space`` as a predictor's training rows were timed: one data canary
    and reference (``data_canary``) for every arch, built once, then ``measure(arch)`` per
    arch.  Why an object and not a loop: the export's measured pick stops at the first arch
    under its budget, search ``--refine`` times a region and adapts, and the benchmarks
    interleave archs of several runs, and all must time alike."""

    def __init__(self, space, predictor_fp: dict | None, resolution: int | None = None, *, ep: str = "cpu",
                 threads: int = 1, allow_fallback: bool = False):
        self.space, self.ep, self.threads, self.allow_fallback = space, ep, threads, allow_fallback
        self.resolution = None if space.searchable_resolution else resolution  # searchable: the arch's own
        self.canary, self.reference = data_canary(space.name, resolution, predictor_fp, ep=ep, threads=threads,
                                                  allow_fallback=allow_fallback)

    def measure(self, arch, **kw) -> ModelLatency:
        """``arch`` (an ``Arch`` or its string) exported and timed by ``measure_model`` (``kw``:
        warmup, runs, sessions, gap_s)."""
        from hwnas.profiling.onnx_graph import arch_to_onnx

        model = arch_to_onnx(self.space, arch, resolution=self.resolution).SerializeToString()
        return measure_model(model, self.canary, self.reference, ep=self.ep, threads=self.threads,
                             allow_fallback=self.allow_fallback, **kw)


def measure_like_data(model_bytes: bytes, space: str, resolution: int, predictor_fp: dict | None, *,
                      ep: str = "cpu", threads: int = 1, warmup: int = 10, runs: int = 50, sessions: int = 3,
                      gap_s: float = 0.5, allow_fallback: bool = False, batch_size: int = 1) -> ModelLatency:
    """A model of ``space`` timed as a predictor's training rows were: against that data's
    canary, on the data's reference when this machine measured them (``data_canary``), with
    the drift warning then."""
    canary, ref = data_canary(space, resolution, predictor_fp, ep=ep, threads=threads,
                              allow_fallback=allow_fallback, batch_size=batch_size)
    m = measure_model(model_bytes, canary, ref, ep=ep, threads=threads, warmup=warmup, runs=runs, sessions=sessions,
                      gap_s=gap_s, allow_fallback=allow_fallback, batch_size=batch_size)
    if ref.source == "predictor":
        warn_if_drifted(m.speed_factor, ref.reference_ms)
    return m


def warn_if_drifted(factor: float, reference_ms: float) -> bool:
    """Log the "device changed" WARNING when ``factor`` is more than ``DRIFT_TOLERANCE`` from 1."""
    if abs(factor - 1) <= DRIFT_TOLERANCE:
        return False
    logger.warning("this device changed since the predictor was trained, or is in a slow/fast phase: its canary "
                   "runs %.2fx its reference (%.4f ms now, %.4f ms then). Paired measurements cancel a passing "
                   "phase; if it persists, re-profile or recalibrate ('hwnas data recalibrate')",
                   factor, factor * reference_ms, reference_ms)
    return True


def check_predictor_device(predictor_fp: dict | None, *, ep: str = "cpu", threads: int = 1) -> float | None:
    """Before a predictor is used here: warn with both fingerprints side by side when it
    was trained on another machine, else check its canary for drift (``device_drift``)."""
    from hwnas.profiling.fingerprint import describe_side_by_side, device_fingerprint

    if not predictor_fp or predictor_fp.get("imported"):
        return None
    here = device_fingerprint(ep, threads=threads)
    if not same_machine(predictor_fp, here):
        logger.warning("the predictor was trained on data of another device; its latencies describe that one:\n%s",
                       describe_side_by_side(predictor_fp, here))
        return None
    return device_drift(predictor_fp, ep=ep, threads=threads)


def device_drift(predictor_fp: dict | None, *, ep: str = "cpu", threads: int = 1) -> float | None:
    """This machine's canary now over the reference stored with a predictor (1 = unchanged),
    or None when the predictor carries no canary or was measured on another machine.  Logs
    a WARNING when it is more than ``DRIFT_TOLERANCE`` away."""
    from hwnas.profiling.canary import calibrate, rebuild_stored
    from hwnas.profiling.fingerprint import device_fingerprint

    theirs = (predictor_fp or {}).get("canary")
    if not theirs or not same_machine(predictor_fp, device_fingerprint(ep, threads=threads)):
        return None
    try:
        canary = rebuild_stored(theirs)
    except ProfilingError as e:
        logger.warning("cannot check the device for drift: %s", e)
        return None
    now = calibrate(canary, ep=ep, threads=threads, sessions=QUICK_SESSIONS, gap_s=QUICK_GAP_S).reference_ms
    factor = now / float(theirs["reference_ms"])
    warn_if_drifted(factor, float(theirs["reference_ms"]))
    return factor
