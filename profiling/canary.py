"""The canary: one fixed architecture per measurement context that every arch is timed against.

Why: a shared host, a laptop with turbo and thermal limits, a GPU whose clocks boost and
throttle all change speed *as a whole*, for seconds at a time (``benchmarks/results/
profiling_phases.md``: 1.2-1.8x on our 2-vCPU VM).  A factor shared by everything that runs
in the same moment cancels in a ratio, so the profiler times each arch in alternation with
the canary (``hwnas.profiling.paired``) and stores ``ratio x reference``, where the
*reference* is the canary's latency on this device, measured once by ``calibrate`` and
then reused by every later campaign: data measured on different days of one device then
share one scale.

The rule that picks the canary (``default_canary_arch``): draw ``CANARY_SAMPLE`` archs
uniformly with a generator seeded ``CANARY_SEED`` and take the one of median FLOPs.  A
mid-sized arch has a latency in the middle of the space's range (ratios near 1, where
timer resolution matters least) and uses the same kinds of kernels as the archs it is
compared with.  The rule is deterministic, so every machine picks the same canary; its
ONNX graph (seeded weights) is hashed, and the hash is stored beside the reference, so a
reference is only ever applied to the very model it was measured on.

The same sample gives the two *probes* (``probe_archs``: its 3% and 97% FLOPs archs) that
a campaign's calibration block pairs with the canary to learn the device's state constant
(``hwnas.profiling.contention``): far from the canary on both sides, where the contended
state moves ratios most.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from hwnas.errors import HwnasError, ProfilingError

logger = logging.getLogger(__name__)

CANARY_SAMPLE = 101
CANARY_SEED = 0
# calibration block: short canary sessions spread over tens of seconds
CALIBRATION_SESSIONS = 8
CALIBRATION_RUNS = 30
CALIBRATION_GAP_S = 2.0
CALIBRATION_QUANTILE = 0.25
PROBE_QUANTILES = {"S": 0.03, "L": 0.97}  # of the FLOPs of the rule's seeded sample
PROBE_PAIRS = 50  # pairs of each probe's session against the canary, as an arch's


@dataclass(frozen=True)
class Canary:
    """The canary model of one context: its arch, input resolution, batch and ONNX bytes."""

    space: str
    arch: str
    resolution: int
    batch_size: int
    onnx: bytes
    sha256: str

    def describe(self) -> dict:
        return {"space": self.space, "arch": self.arch, "resolution": self.resolution,
                "batch_size": self.batch_size, "sha256": self.sha256}


@dataclass(frozen=True)
class CanaryReference:
    """The device's canary latency: what one unit of ratio means in milliseconds."""

    reference_ms: float
    statistic: str
    session_medians_ms: tuple[float, ...]
    span_s: float  # seconds the calibration block spread over
    created: str
    gamma: float = 0.0  # the state constant (``hwnas.profiling.contention``); 0: ratio x reference
    state: dict | None = None  # how gamma was learned: probes, their (ratio, f) sessions, the fit

    def to_dict(self) -> dict:
        return {"reference_ms": self.reference_ms, "statistic": self.statistic,
                "session_medians_ms": list(self.session_medians_ms), "span_s": self.span_s,
                "created": self.created, "gamma": self.gamma, "state": self.state}


def _rule_sample(space) -> tuple[list, np.ndarray]:
    """The rule's ``CANARY_SAMPLE`` uniform draws (seed ``CANARY_SEED``) and their FLOPs order."""
    from hwnas.cost import arch_cost

    rng = np.random.default_rng(CANARY_SEED)
    archs = [space.sample(rng) for _ in range(CANARY_SAMPLE)]
    flops = [arch_cost(space, a, space.resolution(a)).flops for a in archs]
    return archs, np.argsort(flops, kind="stable")


def default_canary_arch(space) -> str:
    """The median-FLOPs arch of ``CANARY_SAMPLE`` uniform draws (seed ``CANARY_SEED``)."""
    archs, order = _rule_sample(space)
    return str(archs[int(order[len(order) // 2])])


def probe_archs(space) -> dict[str, str]:
    """The probes ``S`` and ``L``: the ``PROBE_QUANTILES`` FLOPs archs of the rule's sample."""
    archs, order = _rule_sample(space)
    return {k: str(archs[int(order[int(round(q * (len(order) - 1)))])]) for k, q in PROBE_QUANTILES.items()}


def build_canary(space_name: str, *, arch: str | None = None, resolution: int | None = None,
                 batch_size: int = 1) -> Canary:
    """The canary of (space, resolution, batch): ``arch`` or the default rule's arch, built
    with seeded weights.  A ``--canary`` that is not an arch of the space, or that fails to
    build, is a ``ProfilingError`` naming it."""
    from hwnas.profiling.onnx_graph import arch_to_onnx
    from hwnas.space import get_space

    space = get_space(space_name)
    if arch is None:
        arch = default_canary_arch(space)
    try:
        parsed = space.parse(arch)
    except HwnasError as e:
        raise ProfilingError(f"--canary {arch!r} is not an arch of space {space_name!r}: {e}") from None
    res = space.resolution(parsed, None if space.searchable_resolution else resolution)
    try:
        data = arch_to_onnx(space, parsed, batch_size=batch_size, resolution=res).SerializeToString()
    except (HwnasError, RuntimeError, ValueError) as e:
        raise ProfilingError(f"canary {arch!r} of space {space_name!r} failed to build: {e}") from e
    return Canary(space_name, str(parsed), int(res), int(batch_size), data, hashlib.sha256(data).hexdigest())


def rebuild_stored(record: dict) -> Canary:
    """The canary a stored record (a ``canaries`` row, or the ``canary`` of a fingerprint)
    was measured on, rebuilt here; a ``ProfilingError`` when it now builds to another ONNX
    graph (another hwnas or torch version), since its reference then describes another model."""
    canary = build_canary(record["space"], arch=record["arch"], resolution=record["resolution"],
                          batch_size=record["batch"])
    if canary.sha256 != record["sha256"]:
        raise ProfilingError(f"the canary {record['arch']} builds to another ONNX graph here (sha256 "
                             f"{canary.sha256[:12]}, stored {record['sha256'][:12]}): another hwnas or torch "
                             "version; its reference does not apply")
    return canary


def calibrate(canary: Canary, *, ep: str = "cpu", threads: int = 1, sessions: int = CALIBRATION_SESSIONS,
              runs: int = CALIBRATION_RUNS, gap_s: float = CALIBRATION_GAP_S, warmup: int = 10,
              allow_fallback: bool = False, ep_options: dict | None = None, cache_dir: str | None = None,
              probes: bool = False, on_session=None) -> CanaryReference:
    """Measure the canary's reference latency: ``sessions`` fresh short sessions, ``gap_s``
    apart, and the ``CALIBRATION_QUANTILE`` quantile of their medians.  With ``probes``
    (a campaign's block) each round also times the two probes against the canary, and
    the state constant is fitted on their sessions (``contention.accept_gamma``).

    Why spread and why the lower quartile: a session falls inside one speed phase of the
    host, so a block of sessions over tens of seconds samples several phases; contention
    only adds time, so the lower values describe the undisturbed machine, but the minimum
    of a handful of sessions is the most extreme order statistic and moves with one lucky
    session, while the lower quartile stays put.  The reference only fixes the scale of
    the stored latencies (ratios carry the information), so what it must be above all is
    stored once and reused, not re-measured per campaign.
    """
    from hwnas.profiling.runner import measure

    if sessions < 1 or runs < 1 or gap_s < 0:
        raise ProfilingError(f"calibration needs sessions >= 1, runs >= 1, gap_s >= 0; got {sessions}, {runs}, {gap_s}")
    t0 = time.monotonic()
    kw = dict(ep=ep, threads=threads, allow_fallback=allow_fallback, ep_options=ep_options, cache_dir=cache_dir)
    probing = _Probes(canary, warmup=warmup, **kw) if probes else None
    medians = []
    for i in range(sessions):
        if i and gap_s:
            time.sleep(gap_s)
        m = measure(canary.onnx, warmup=warmup, runs=runs, batch_size=canary.batch_size, **kw)
        medians.append(m.median_ms)
        if probing is not None:
            probing.round()
        if on_session is not None:
            on_session(i + 1, sessions)
    ref = float(np.quantile(medians, CALIBRATION_QUANTILE))
    state = probing.fit(ref) if probing is not None else None
    gamma = state["gamma"] if state else 0.0
    logger.info("canary %s calibrated: %.4f ms (sessions %.4f-%.4f ms)%s", canary.arch, ref, min(medians),
                max(medians), f"; state constant {gamma:.2f} ({state['why']})" if state else "")
    return CanaryReference(ref, f"q{CALIBRATION_QUANTILE:g} of {sessions} session medians", tuple(medians),
                           time.monotonic() - t0, time.strftime("%Y-%m-%dT%H:%M:%S%z"), gamma, state)


class _Probes:
    """The probes of a calibration block: one paired session of each per round against
    the canary, held open as a campaign holds it, so their ``f`` is an arch row's ``f``."""

    def __init__(self, canary: Canary, *, warmup: int, **kw):
        from hwnas.profiling.paired import PairedTimer
        from hwnas.space import get_space

        self.archs = probe_archs(get_space(canary.space))
        self.models = {k: build_canary(canary.space, arch=a, resolution=canary.resolution,
                                       batch_size=canary.batch_size).onnx for k, a in self.archs.items()}
        self.timer = PairedTimer(canary.onnx, warmup=warmup, batch_size=canary.batch_size, **kw)
        self.obs: list[tuple[str, float, float]] = []  # (probe, ratio, canary median ms)

    def round(self) -> None:
        for k, data in self.models.items():
            p = self.timer.measure(data, runs=PROBE_PAIRS)
            self.obs.append((k, p.ratio, p.canary_median_ms))

    def fit(self, reference_ms: float) -> dict:
        from hwnas.profiling.contention import accept_gamma

        return {"probes": self.archs, "obs": [list(o) for o in self.obs],
                **accept_gamma([(k, r, c / reference_ms) for k, r, c in self.obs])}


def recalibrate_store(store, canary_row: dict, *, sessions: int = CALIBRATION_SESSIONS,
                      gap_s: float = CALIBRATION_GAP_S, warmup: int = 10, on_session=None) -> tuple[CanaryReference, int]:
    """Re-measure a stored canary's reference on this machine and rescale its rows.

    Refused where this machine is not the device that measured the rows (its hardware
    differs from the stored fingerprint) or where the canary now builds to another graph:
    either would put numbers of two devices under one reference.  Returns (the new
    reference, rows rescaled); the raw numbers and the old reference (in the canary's
    history) are kept.
    """
    from hwnas.profiling.fingerprint import describe_side_by_side, device_fingerprint, hardware_diff

    fp = store.fingerprint(canary_row["device_id"])
    here = device_fingerprint(fp.get("ep") or "cpu", threads=fp.get("threads") or 1,
                              batch_size=fp.get("batch_size") or 1, precision=fp.get("precision") or "fp32")
    if hardware_diff(fp, here):
        raise ProfilingError(f"device {canary_row['device_id']} was measured on another machine; recalibrating "
                             "here would mix two devices:\n" + describe_side_by_side(fp, here))
    canary = rebuild_stored(canary_row)
    ref = calibrate(canary, ep=fp.get("ep") or "cpu", threads=fp.get("threads") or 1, sessions=sessions,
                    gap_s=gap_s, warmup=warmup, probes=True, on_session=on_session)
    return ref, store.recalibrate_canary(canary_row["id"], ref)
