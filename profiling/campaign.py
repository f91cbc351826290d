"""A profiling campaign: sample archs, convert each to ONNX, measure, store one row each.

Why this shape (nn-Meter's convert -> profile -> record): each arch is independent, so
the loop body ``measure_arch`` is a pure function of (space, arch, settings) that runs
in-process or as a Ray task, and only the driver writes to SQLite.

Resuming: a campaign stores its planned arch list (in the ``campaigns`` table) before it
measures anything and commits one row per arch.  Running the same command again finds
the unfinished campaign with the same settings and measures only the planned archs that
have no row yet, so a ``kill -9`` loses at most the arch in flight and never duplicates
one.  A finished campaign is closed; the same command then plans ``num_archs`` *new*
archs, skipping every arch already stored for this device and these settings.

Repeats (``repeats=R``, default 3): the latency of one fresh session is bimodal on a shared
host, because the whole vCPU runs 1.2-1.8x slower for seconds at a time (host contention;
``benchmarks/results/profiling_phases.md``), and the timed runs of one session all fall in
the same phase.  So each arch is measured in R fresh sessions *spread in time* and the
stored ``median_ms`` is the lowest of the R session medians (contention only adds time, so
the minimum estimates the uncontended latency; see ``hwnas.profiling.runner``).  To spread
them, the campaign works in chunks of ``chunk`` archs: each arch of the chunk is built and
exported once (the ONNX bytes stay in memory), then round 1 measures every arch of the
chunk, round 2 again, ...; the R sessions of an arch are one round (``chunk`` sessions)
apart, instead of back to back inside one slow phase.  An arch's row is committed once,
right after its last session, so the resume guarantee is unchanged: a ``kill -9`` loses
the unfinished archs of the current chunk (they have no row and are measured again, all R
sessions, on resume) and never duplicates one.  The row keeps every session median
(``extra.session_medians_ms``, time order) and the statistics (mean/std/p10/p90, runs) of
the chosen session; its cost columns (``session_ms``, ``first_run_ms``,
``timed_total_ms``) are the totals over its R sessions, i.e. what measuring it cost.

The canary (default since schema 2; ``hwnas.profiling.paired``): each session times the arch
in alternation with the campaign's canary, whose session stays open for the whole
campaign, and the row stores ``latency_ms = ratio x reference``.  The repeats above were a
defence against the host's speed phases that the ratio makes unnecessary, so a paired
campaign measures one session per arch by default (``repeats`` None: 1 with the canary,
``DEFAULT_REPEATS`` without).  The reference is calibrated once per device and context,
committed before the first arch, and reused by every later campaign on that device; a
campaign never replaces it (``hwnas data recalibrate`` does, on request).  ``canary=False``
(``--no-canary``) is plain timing, marked ``protocol: plain`` in the fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from hwnas.errors import HwnasError, ProfilingError, valid_list
from hwnas.profiling.canary import CALIBRATION_GAP_S, CALIBRATION_SESSIONS
from hwnas.profiling.steal import STEAL_WARN, StealMeter
from hwnas.space import get_space

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
DEFAULT_REPEATS = 3
DEFAULT_CHUNK = 16


@dataclass(frozen=True)
class CampaignConfig:
    space: str
    num_archs: int
    ep: str = "cpu"
    allow_fallback: bool = False
    batch_size: int = 1
    resolution: int | None = None
    threads: int = 1
    warmup: int = 10
    runs: int | None = 50
    time_budget_s: float | None = None
    sampler: str = "stratified"
    seed: int = 0
    precision: str = "fp32"
    trt_cache_dir: str | None = None
    active_predictor: str | None = None  # --active: pick archs this predictor is least sure of
    repeats: int | None = None  # fresh sessions per arch, spread in time (None: 1 paired, 3 plain)
    chunk: int = DEFAULT_CHUNK  # archs measured round-robin, so an arch's sessions are a round apart
    canary: bool = True  # time every arch against the canary (False: plain timing)
    canary_arch: str | None = None  # --canary ARCH; None: the stored one, else the default rule's
    calibration_sessions: int = CALIBRATION_SESSIONS  # the reference's calibration block (first campaign only)
    calibration_gap_s: float = CALIBRATION_GAP_S

    @property
    def sessions(self) -> int:
        """Sessions per arch: ``repeats``, or the protocol's default."""
        if self.repeats is not None:
            return self.repeats
        return 1 if self.canary else DEFAULT_REPEATS

    @property
    def protocol(self) -> str:
        return "canary" if self.canary else "plain"

    def measure_kwargs(self) -> dict:
        opts = {"trt_fp16_enable": "True"} if self.precision == "fp16" else None
        return dict(ep=self.ep, threads=self.threads, warmup=self.warmup, runs=self.runs,
                    time_budget_s=self.time_budget_s, allow_fallback=self.allow_fallback,
                    batch_size=self.batch_size, ep_options=opts, cache_dir=self.trt_cache_dir)


@dataclass
class CampaignResult:
    campaign_id: int
    device_id: str
    planned: int
    measured: int = 0  # rows written by this run (ok + error)
    errors: int = 0
    skipped: int = 0  # planned archs that already had a row (resume)
    interrupted: bool = False
    resumed: bool = False
    wall_s: float = 0.0
    timed_s: float = 0.0  # time inside timed inference runs
    rows: list = field(default_factory=list)
    canary: dict | None = None  # arch, sha256, reference_ms and gamma of the canary (paired campaigns)
    speed_range: tuple[float, float] | None = None  # (min, max) canary median / reference
    speed_factors: list = field(default_factory=list)
    drift_warned: bool = False
    steal_share: float | None = None  # CPU steal over the campaign (``hwnas.profiling.steal``); None off Linux

    @property
    def overhead_share(self) -> float:
        return 1.0 - self.timed_s / self.wall_s if self.wall_s > 0 else float("nan")


def check_config(cfg: CampaignConfig) -> None:
    from hwnas.profiling.providers import check_ep

    check_ep(cfg.ep)
    for name in ("batch_size", "threads", "num_archs", "sessions", "chunk", "calibration_sessions"):
        low = 0 if name == "num_archs" else 1
        if getattr(cfg, name) < low:
            raise ProfilingError(f"{name} must be >= {low}, got {getattr(cfg, name)}")
    if cfg.calibration_gap_s < 0:
        raise ProfilingError(f"calibration_gap_s must be >= 0, got {cfg.calibration_gap_s}")
    if cfg.canary_arch is not None and not cfg.canary:
        raise ProfilingError("--canary ARCH and --no-canary contradict each other; give one")
    if cfg.canary_arch is not None:
        try:
            get_space(cfg.space).parse(cfg.canary_arch)
        except HwnasError as e:
            raise ProfilingError(f"--canary {cfg.canary_arch!r} is not an arch of space {cfg.space!r}: {e}") from None
    if cfg.precision not in PRECISIONS:
        raise ProfilingError(f"precision must be one of {valid_list(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.precision == "fp16" and cfg.ep != "tensorrt":
        raise ProfilingError("precision fp16 needs --ep tensorrt (the ONNX graphs are float32)")


def prepare_arch(space_name: str, arch: str, cfg: CampaignConfig) -> tuple[dict, bytes | None]:
    """Build and export one arch: (row with its cost and build/export times, ONNX bytes),
    or (an error row, None)."""
    from hwnas.cost import arch_cost
    from hwnas.nn import build_model
    from hwnas.profiling.onnx_graph import network_to_onnx, seeded_module

    space = get_space(space_name)
    row = {"space": space_name, "arch": arch, "batch": cfg.batch_size, "precision": cfg.precision, "ep": cfg.ep}
    try:
        a = space.parse(arch)
        row["resolution"] = res = space.resolution(a, cfg.resolution)
        cost = arch_cost(space, a, res)
        row.update(flops=cost.flops, params=cost.params)
        t0 = time.perf_counter()
        model = seeded_module(lambda: build_model(space, a, res))
        t1 = time.perf_counter()
        proto = network_to_onnx(model, batch_size=cfg.batch_size).SerializeToString()
        t2 = time.perf_counter()
        row.update(build_ms=(t1 - t0) * 1e3, export_ms=(t2 - t1) * 1e3)
        return row, proto
    except (HwnasError, RuntimeError, ValueError, MemoryError) as e:
        return _error_row(row, arch, e, cfg, space), None


def _error_row(row: dict, arch: str, e: Exception, cfg: CampaignConfig, space=None) -> dict:
    logger.warning("measuring %s failed: %s", arch, e)
    logger.debug("%s", traceback.format_exc())
    row.update(status="error", error=f"{type(e).__name__}: {e}")
    row.setdefault("resolution", cfg.resolution or (space or get_space(row["space"])).default_resolution)
    return row


def measure_session(data: bytes, cfg: CampaignConfig, timer=None):
    """One fresh session of the campaign's protocol: a ``PairedMeasurement`` against the
    open canary of ``timer``, or a plain ``Measurement`` without one."""
    if timer is not None:
        return timer.measure(data, runs=cfg.runs, time_budget_s=cfg.time_budget_s)
    from hwnas.profiling.runner import measure

    return measure(data, **cfg.measure_kwargs())


def finish_row(row: dict, sessions: list) -> dict:
    """The row of an arch from its sessions (time order).  Plain: statistics of the
    lowest-median session.  Paired: the session of the median ratio (the lower one of an
    even count), its raw arch and canary statistics and every ratio estimate; the
    ``latency_ms`` is set by the driver, which holds the reference.  Every session's
    median (and ratio) is kept in ``extra``; cost columns are summed over the sessions."""
    from hwnas.profiling.runner import combine_sessions

    from hwnas.profiling.paired import median_session

    paired = hasattr(sessions[0], "ratio")
    raw = [s.arch for s in sessions] if paired else sessions
    if paired:
        chosen = median_session(sessions)
        m, p = raw[chosen], sessions[chosen]
    else:
        m = combine_sessions(raw)
        chosen = [x.median_ms for x in raw].index(m.median_ms)
    row.update({k: v for k, v in m.to_dict().items() if k not in (
        "ep", "threads", "batch_size", "fallback_reason", "cpu_median_ms", "repeats", "session_medians_ms")})
    for k in ("session_ms", "first_run_ms", "timed_total_ms"):
        row[k] = float(sum(getattr(s, k) for s in raw))
    if m.engine_build_ms is not None:
        row["engine_build_ms"] = float(sum(s.engine_build_ms or 0.0 for s in raw))
    row["status"] = "ok"
    several = len(raw) > 1
    extra = {"fallback_reason": m.fallback_reason, "cpu_median_ms": m.cpu_median_ms, "repeats": len(raw),
             "session_medians_ms": [round(x.median_ms, 6) for x in raw] if several else None,
             "chosen_session": chosen if several else None}
    if paired:
        row.update(ratio=p.ratio, canary_median_ms=p.canary_median_ms, calibrated=True)
        extra.update(estimates={k: round(v, 6) for k, v in p.estimates.items()}, pairs=p.pairs,
                     canary_p10_ms=round(p.canary_p10_ms, 6), canary_p90_ms=round(p.canary_p90_ms, 6),
                     canary_timed_ms=round(sum(s.canary_total_ms for s in sessions), 3),
                     session_ratios=[round(s.ratio, 6) for s in sessions] if several else None)
    row["extra"] = {k: v for k, v in extra.items() if v is not None} or None
    return row


def measure_arch(space_name: str, arch: str, cfg: CampaignConfig, canary=None) -> dict:
    """Build, export and measure one arch in ``cfg.sessions`` sessions *back to back*; a row
    dict (status 'error' with the error text instead of raising, so one bad arch never
    stops a campaign).  The in-process campaign spreads the sessions in time instead
    (``measure_chunk``); this is the unit of work of a Ray task, which times against its
    own process's copy of ``canary`` (a ``Canary``; None: plain timing)."""
    row, data = prepare_arch(space_name, arch, cfg)
    if data is None:
        return row
    try:
        timer = worker_timer(canary, cfg) if canary is not None else None
        return finish_row(row, [measure_session(data, cfg, timer) for _ in range(cfg.sessions)])
    except (HwnasError, RuntimeError, ValueError, MemoryError) as e:
        return _error_row(row, arch, e, cfg)


_WORKER_TIMERS: dict = {}


def worker_timer(canary, cfg: CampaignConfig):
    """A ``PairedTimer`` for ``canary`` kept open in this process (one per canary and
    settings), so a Ray worker opens the canary's session once, not once per task."""
    key = (canary.sha256, cfg.ep, cfg.threads, cfg.batch_size, cfg.precision, cfg.warmup)
    if key not in _WORKER_TIMERS:
        _WORKER_TIMERS.clear()
        _WORKER_TIMERS[key] = open_timer(canary, cfg)
    return _WORKER_TIMERS[key]


def open_timer(canary, cfg: CampaignConfig):
    from hwnas.profiling.paired import PairedTimer

    kw = cfg.measure_kwargs()
    return PairedTimer(canary.onnx, ep=cfg.ep, threads=cfg.threads, warmup=cfg.warmup,
                       allow_fallback=cfg.allow_fallback, batch_size=cfg.batch_size, ep_options=kw["ep_options"],
                       cache_dir=cfg.trt_cache_dir)


def measure_chunk(space_name: str, archs: list[str], cfg: CampaignConfig, record, stop=None, timer=None) -> None:
    """Measure ``archs`` round-robin: build/export each once, then ``cfg.sessions`` rounds of
    one fresh session per arch (against ``timer``'s canary if given); ``record(row)`` each
    arch right after its last session.  A stop request ends the chunk at the next
    session: unfinished archs get no row."""
    prepared = []
    for arch in archs:
        if stop is not None and stop.stop:
            return
        row, data = prepare_arch(space_name, arch, cfg)
        if data is None:
            record(row)
        else:
            prepared.append([row, data, []])
    for rnd in range(cfg.sessions):
        last = rnd == cfg.sessions - 1
        for item in prepared:
            row, data, sessions = item
            if data is None:  # failed in an earlier round: already recorded
                continue
            if stop is not None and stop.stop:
                return
            try:
                sessions.append(measure_session(data, cfg, timer))
            except (HwnasError, RuntimeError, ValueError, MemoryError) as e:
                item[1] = None
                record(_error_row(row, row["arch"], e, cfg))
                continue
            if last:
                item[1] = None  # free the model bytes
                record(finish_row(row, sessions))


def _resolution_filter(cfg: CampaignConfig) -> int | None:
    """The fixed input resolution of the campaign, or None where each arch carries its own."""
    space = get_space(cfg.space)
    if space.searchable_resolution:
        if cfg.resolution is not None:
            raise ProfilingError(f"space {cfg.space!r} searches the resolution itself; drop --resolution")
        return None
    return space.resolution(None, cfg.resolution)


def campaign_key(cfg: CampaignConfig, device_id: str) -> str:
    d = asdict(cfg)
    d.pop("trt_cache_dir")
    d.pop("chunk")  # how sessions are interleaved, not what is measured: resume with another --chunk
    d.pop("calibration_sessions")  # how the reference is set once, not what a row measures
    d.pop("calibration_gap_s")
    d["device_id"] = device_id
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def campaign_device(cfg: CampaignConfig) -> dict:
    """Fingerprint of the device the campaign will really measure on (fails early if the
    provider cannot load and no fallback is allowed)."""
    from hwnas.profiling.fingerprint import device_fingerprint
    from hwnas.profiling.providers import choose_provider

    choice = choose_provider(cfg.ep, allow_fallback=cfg.allow_fallback)
    opts = cfg.measure_kwargs()["ep_options"]
    return device_fingerprint(choice.ep_used, ep_options=opts, threads=cfg.threads,
                              batch_size=cfg.batch_size, precision=cfg.precision, repeats=cfg.sessions,
                              protocol=cfg.protocol)


def calibration_kwargs(cfg: CampaignConfig) -> dict:
    """Keywords of ``canary.calibrate`` for this campaign's settings (in-process or on a worker)."""
    return dict(ep=cfg.ep, threads=cfg.threads, sessions=cfg.calibration_sessions, gap_s=cfg.calibration_gap_s,
                warmup=cfg.warmup, allow_fallback=cfg.allow_fallback, ep_options=cfg.measure_kwargs()["ep_options"],
                cache_dir=cfg.trt_cache_dir, probes=True)


def stored_canary(store, cfg: CampaignConfig, dev: str, resolution: int | None):
    """(``Canary``, stored canary row) of this campaign's context on device ``dev``, or None
    when the device has no reference yet for it.

    The stored canary is rebuilt here and its ONNX hash checked against the one the
    reference was measured on.  ``--canary`` naming another arch than the stored one is
    refused: the stored rows' ratios are to that canary.
    """
    from hwnas.profiling.canary import rebuild_stored

    space = get_space(cfg.space)
    if space.searchable_resolution:
        # the canary is an arch that carries its own resolution (``build_canary``), not the
        # space's default one: one canary per space and batch, whatever the arch's resolution
        stored = next((c for c in store.canaries(dev) if c["space"] == cfg.space and c["batch"] == cfg.batch_size),
                      None)
    else:
        res = resolution if resolution is not None else space.default_resolution
        stored = store.canary(dev, cfg.space, res, cfg.batch_size)
    if stored is None:
        return None
    if cfg.canary_arch is not None and str(space.parse(cfg.canary_arch)) != stored["arch"]:
        raise ProfilingError(f"device {dev} already measures {cfg.space} against canary {stored['arch']}; "
                             f"--canary {cfg.canary_arch} would mix two scales in one dataset "
                             "(use another --db, or drop --canary)")
    try:
        return rebuild_stored(stored), stored
    except ProfilingError as e:
        raise ProfilingError(f"{e}; the stored rows' ratios are to the old graph, so measure into a new --db") from None


def new_canary(cfg: CampaignConfig, resolution: int | None):
    """The canary a device without a reference is calibrated on (``--canary`` or the default rule)."""
    from hwnas.profiling.canary import build_canary

    res = resolution if resolution is not None else get_space(cfg.space).default_resolution
    return build_canary(cfg.space, arch=cfg.canary_arch, resolution=res, batch_size=cfg.batch_size)


def campaign_canary(store, cfg: CampaignConfig, dev: str, resolution: int | None, on_calibrate=None):
    """(``Canary``, stored canary row) of this campaign's context on device ``dev``.

    The first campaign of a context calibrates the reference (``calibrate``) on this machine
    and commits it before any arch is measured; later campaigns reuse the stored one
    (``stored_canary``).  A fleet (``hwnas.profiling.fleet``) calibrates on each worker instead.
    """
    from hwnas.profiling.canary import calibrate

    found = stored_canary(store, cfg, dev, resolution)
    if found is not None:
        return found
    canary = new_canary(cfg, resolution)
    ref = calibrate(canary, **calibration_kwargs(cfg), on_session=on_calibrate)
    return canary, store.add_canary(dev, canary, ref)


def plan_campaign(store, cfg: CampaignConfig, dev: str, done: set[str]) -> tuple[int, list[str], bool]:
    """(campaign id, planned archs, resumed?): the open campaign with these settings on
    device ``dev``, or a new one of ``num_archs`` archs not in ``done`` (the archs already
    stored for this device and settings)."""
    from hwnas.profiling.sampling import sample_archs

    key = campaign_key(cfg, dev)
    found = store.open_campaign(key)
    if found is not None:
        return found[0], found[1], True
    space = get_space(cfg.space)
    if cfg.active_predictor:
        from hwnas.profiling.active import pick_uncertain

        picked = pick_uncertain(space, cfg.active_predictor, cfg.num_archs, sampler=cfg.sampler, seed=cfg.seed,
                                exclude=done, resolution=cfg.resolution)
    else:
        picked = sample_archs(space, cfg.num_archs, sampler=cfg.sampler, seed=cfg.seed, exclude=done,
                              resolution=cfg.resolution)
    archs = [str(a) for a in picked]
    cid = store.start_campaign(key, {**asdict(cfg), "device_id": dev}, archs)
    return cid, archs, False


class StopFlag:
    """First Ctrl-C: finish the current session, then stop (archs of the chunk without all
    their sessions get no row and are measured again on resume).  Second Ctrl-C: stop now."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        logger.warning("interrupted: stopping after the current session (Ctrl-C again to abort now)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


REFERENCE_SLOW = 1.25  # warn when the canary runs this much faster than its reference for most of a campaign
DRIFT_WARN = 1.5  # warn when the machine's speed (the canary's median) swings more than this within a campaign


def run_campaign(store, cfg: CampaignConfig, *, on_row=None, ray_address: str | None = None,
                 stop: StopFlag | None = None, on_calibrate=None) -> CampaignResult:
    """Run (or resume) a campaign into ``store``; ``on_row(row, result)`` after each commit,
    ``on_calibrate(i, n)`` after each session of a first campaign's calibration block."""
    check_config(cfg)
    res_filter = _resolution_filter(cfg)  # also validates --resolution against the space
    t_start = time.perf_counter()
    steal = StealMeter()
    dev = store.add_device(campaign_device(cfg))
    have = store.measured_archs(dev, cfg.space, batch=cfg.batch_size, precision=cfg.precision, ep=cfg.ep,
                                resolution=res_filter)
    cid, planned, resumed = plan_campaign(store, cfg, dev, have)
    todo = [a for a in planned if a not in have]
    res = CampaignResult(cid, dev, len(planned), skipped=len(planned) - len(todo), resumed=resumed)
    if resumed:
        logger.info("resuming campaign %d: %d of %d archs left", cid, len(todo), len(planned))
    canary = stored = timer = None
    if cfg.canary and todo:
        canary, stored = campaign_canary(store, cfg, dev, res_filter, on_calibrate)
        res.canary = canary_summary(stored)
        if ray_address is None:
            timer = open_timer(canary, cfg)

    record = row_recorder(store, dev, stored, res, on_row)
    stop = stop or StopFlag()
    with stop:
        if ray_address is not None:
            from hwnas.profiling.distributed import run_on_ray

            run_on_ray(todo, cfg, record, address=ray_address, stop=stop, canary=canary, device_id=dev)
        else:
            for i in range(0, len(todo), cfg.chunk):
                if stop.stop:
                    break
                measure_chunk(cfg.space, todo[i:i + cfg.chunk], cfg, record, stop, timer)
    res.interrupted = stop.stop
    _check_reference(res)
    res.steal_share = steal.share()
    _check_steal(res)
    if not res.interrupted:
        store.finish_campaign(cid)
    res.wall_s = time.perf_counter() - t_start
    return res


def canary_summary(stored: dict) -> dict:
    """What a campaign's result says of its canary: arch, graph hash, reference, state constant."""
    from hwnas.profiling.contention import gamma_of

    return {**{k: stored[k] for k in ("arch", "sha256", "reference_ms")}, "gamma": gamma_of(stored)}


def row_recorder(store, dev: str, stored: dict | None, res: CampaignResult, on_row=None):
    """The driver's ``record(row)`` for device ``dev``: turn a paired row's ratio into
    milliseconds with *that device's* canary reference and state constant (``stored``;
    None: plain timing; ``contention.calibrated_ms``), commit it under ``dev`` and count it
    in ``res``; ``on_row(row, res)`` after each."""
    from hwnas.profiling.contention import calibrated_ms, gamma_of

    gamma = gamma_of(stored)

    def record(row: dict) -> None:
        if row.get("calibrated") and row["status"] == "ok":
            row.update(latency_ms=calibrated_ms(row["ratio"], row["canary_median_ms"], stored["reference_ms"], gamma),
                       canary_id=stored["id"])
            _watch_speed(res, row["canary_median_ms"] / stored["reference_ms"])
        elif row["status"] == "ok":
            row["latency_ms"] = row["median_ms"]  # plain timing: the row means its own median
        if store.add_row(dev, row):
            res.measured += 1
            res.errors += row["status"] == "error"
            res.timed_s += (row.get("timed_total_ms") or 0.0) / 1e3
            res.rows.append(row)
        if on_row is not None:
            on_row(row, res)

    return record


def _watch_speed(res: CampaignResult, factor: float) -> None:
    """Track the machine's speed factor; warn once when it swings beyond ``DRIFT_WARN``."""
    res.speed_factors.append(factor)
    lo, hi = min(res.speed_factors), max(res.speed_factors)
    res.speed_range = (lo, hi)
    if not res.drift_warned and hi / lo > DRIFT_WARN:
        res.drift_warned = True
        logger.warning("this machine's speed swung %.2fx during the campaign (canary at %.2f-%.2f of its "
                       "reference); the paired ratios cancel it, but check 'hwnas data drift' for a trend",
                       hi / lo, lo, hi)


def _check_steal(res: CampaignResult) -> None:
    """Warn when the hypervisor took more than ``STEAL_WARN`` of the CPU during a campaign
    that measured something: the host was then busy, which on shared VMs comes with a
    contended state where the ratios of small models move against the canary
    (``hwnas.profiling.steal``)."""
    if res.steal_share is not None and res.steal_share > STEAL_WARN and res.measured:
        logger.warning("the hypervisor took %.1f%% of this machine's CPU time during the campaign (steal): the "
                       "host was busy, and on shared VMs small models then slow by more than the canary, so "
                       "their ratios can read up to ~30%% higher than in a quiet phase; re-measure them when "
                       "steal is low if that matters", 100 * res.steal_share)


def _check_reference(res: CampaignResult, min_rows: int = 20) -> None:
    """Warn when the canary ran clearly faster than its reference for most of a campaign:
    the reference was then calibrated in a slow phase (another process, a throttled host).
    The rows are right relative to each other either way (ratios); only their scale in ms is
    off, and only ``hwnas data recalibrate`` changes it, never a campaign on its own."""
    f = res.speed_factors
    if len(f) >= min_rows and float(np.median(f)) < 1 / REFERENCE_SLOW:
        logger.warning("the canary ran at a median %.2f of its reference during this campaign: the reference was "
                       "probably calibrated while the machine was slow; its latencies are consistent with each "
                       "other but %.0f%% high in ms. 'hwnas data recalibrate' re-measures the reference on a quiet "
                       "machine and rescales every row", float(np.median(f)), 100 * (1 / float(np.median(f)) - 1))
