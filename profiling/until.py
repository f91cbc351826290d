"""``hwnas profile --until within10=0.95``: measure in rounds until a predictor is good enough.

Why: how many archs a device needs is not known in advance.  Too few and the predictor
misses the goal, too many and the profiling hours are wasted.  So the campaign runs in
rounds of ``num_archs`` new archs; after each round the predictor named by ``model`` is
judged by k-fold cross-validation on everything stored for the device, and the loop stops
as soon as the cross-validated metric meets the target.

The learning curve tells when to give up.  The error of a learner typically falls as a
power law of the training-set size towards a floor, ``e(n) = a * n**-b + c`` (the idea of
learning-curve extrapolation, e.g. Domhan et al. 2015, and of power-law learning curves,
Hestness et al. 2017; only the idea is borrowed, the fit here is our own small one).  The
asymptote ``c`` is the error no amount of data removes: measurement noise, and what the
model cannot represent.  From three rounds on the curve is fitted and solved for the ``n``
where it meets the target error, and printed; from five rounds on (``MIN_ROUNDS_TO_GIVE_UP``),
when that floor is at or above the target (or the ``n`` is far beyond ``max_archs``),
measuring more cannot help and the loop stops and says so.

A measurement-noise ceiling is *not* computed: the store holds one row per (device, arch,
settings), and the session medians kept in a row are ingredients of its value (their
minimum, or the median ratio), not independent re-measurements of it, so they do not tell
how far a re-measured value would land.  The fitted asymptote is the evidence instead.

Resuming: every round is a plain campaign (``run_campaign``), so it excludes every arch
already stored for the device and settings (rounds never duplicate an arch) and a killed
round is resumed by the same command: before planning a round the loop looks for an
unfinished campaign of these settings of any round size up to ``num_archs`` (the last round
can be smaller, capped by ``max_archs``) and finishes that first.  Archs already stored
count towards ``max_archs`` and, from ``MIN_ARCHS`` on, are judged before anything new is
measured, so a restarted run that already reached its target measures nothing.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from hwnas.errors import ProfilingError, valid_list
from hwnas.predictors._select import METRICS  # --until METRIC: the predictors' metric names

logger = logging.getLogger(__name__)

FOLDS = 5
MIN_ARCHS = 2 * FOLDS  # fewer stored archs are not judged (each fold's test set would be 1 arch)
MIN_ROUNDS_FOR_FORECAST = 3
#: judged rounds before the forecast may stop a run as out of reach: with three points a
#: steep curve with a high floor fits as well as a slow one with a low floor (on tiny, xgb's
#: 0.58, 0.74, 0.77 within +-10% at 50-150 archs fitted b = 2 and a floor of 0.79, where 800
#: archs reach 0.945), so the printed forecast starts at three rounds, giving up at five
MIN_ROUNDS_TO_GIVE_UP = 5
REACH_MARGIN = 4.0  # out of reach: the forecast needs more than this many times max_archs
#: exponents tried by the fit: learning curves of supervised learners fall as n^-b with b well
#: below 1 (Hestness et al. 2017 report 0.07-0.35 for generalisation error); steeper fits
#: from a few noisy rounds are what made the floor look high
B_GRID = np.linspace(0.1, 1.0, 91)


@dataclass(frozen=True)
class UntilTarget:
    """``metric`` (one of ``METRICS``) and its ``target`` (a lower bound; for mape an upper one)."""

    metric: str
    target: float

    @property
    def key(self) -> str:
        return METRICS[self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    def error(self, value: float) -> float:
        """The error the learning curve is fitted to: 1 - value, or mape itself."""
        return 1.0 - value if self.higher_is_better else value

    def value(self, error: float) -> float:
        return 1.0 - error if self.higher_is_better else error

    @property
    def target_error(self) -> float:
        return self.error(self.target)

    def reached(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    def __str__(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.target:g}"


def parse_until(spec: str) -> UntilTarget:
    """``'within10=0.95'`` -> ``UntilTarget('within10', 0.95)``; values are fractions."""
    usage = f"--until must be METRIC=TARGET with METRIC one of {valid_list(METRICS)} (e.g. within10=0.95)"
    metric, sep, text = str(spec).partition("=")
    metric = metric.strip().lower()
    if not sep or metric not in METRICS:
        raise ProfilingError(f"{usage}; got {spec!r}")
    try:
        target = float(text)
    except ValueError:
        raise ProfilingError(f"{usage}; the target of {spec!r} is not a number") from None
    if not math.isfinite(target):
        raise ProfilingError(f"{usage}; the target of {spec!r} is not finite")
    if metric == "mape":
        if target <= 0:
            raise ProfilingError(f"--until mape=TARGET must have TARGET > 0 (an upper bound, a fraction: "
                                 f"mape=0.05), got {target:g}; METRIC is one of {valid_list(METRICS)}")
    elif not 0 < target <= 1:
        hint = " (targets are fractions: within10=0.95, not 95)" if target > 1 else ""
        raise ProfilingError(f"--until {metric}=TARGET must have 0 < TARGET <= 1{hint}, got {target:g}; "
                             f"METRIC is one of {valid_list(METRICS)}")
    return UntilTarget(metric, target)


@dataclass(frozen=True)
class CurveFit:
    """``e(n) = a * n**-b + c`` fitted to the rounds' errors (all of a, b, c >= 0)."""

    a: float
    b: float
    c: float

    def error_at(self, n) -> np.ndarray:
        return self.a * np.asarray(n, dtype=np.float64) ** -self.b + self.c

    def needed(self, target_error: float) -> float:
        """Archs at which the curve reaches ``target_error``; ``inf`` if its floor ``c`` does not
        go below it."""
        if self.c >= target_error:
            return math.inf
        if self.a == 0:
            return 1
        return math.ceil((self.a / (target_error - self.c)) ** (1.0 / self.b))


def fit_learning_curve(n, error) -> CurveFit | None:
    """Least-squares fit of ``a * n**-b + c`` with a, c >= 0 (non-negative least squares) for
    each ``b`` of ``B_GRID``; the best.  None with fewer than ``MIN_ROUNDS_FOR_FORECAST``
    finite points.  A grid over ``b`` instead of ``curve_fit``: three to a few dozen noisy
    points, and the bounds must hold; a grid cannot fail to converge.  ``b`` starts at 0.1:
    a smaller exponent (under 7% less error per doubling of the data) is flat over any
    profiling budget, and allowing it lets ``a`` and ``c`` trade off freely on flat, noisy
    rounds, pulling the asymptote down without evidence."""
    from scipy.optimize import nnls

    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(e) & (n > 0)
    n, e = n[ok], e[ok]
    if len(n) < MIN_ROUNDS_FOR_FORECAST:
        return None
    best = None
    for b in B_GRID:
        A = np.column_stack([n ** -b, np.ones_like(n)])
        (a, c), rnorm = nnls(A, e)
        if best is None or rnorm < best[0] - 1e-12:
            best = (rnorm, float(a), float(b), float(c))
    _, a, b, c = best
    return CurveFit(a, b if a > 0 else 0.0, c)


@dataclass(frozen=True)
class UntilRound:
    n: int  # archs the predictor was cross-validated on
    value: float | None  # the metric (None: too few archs to judge)
    new: int  # archs this round measured (0: what was already stored)


@dataclass
class UntilResult:
    target: UntilTarget
    model: str
    max_archs: int
    device_id: str = ""
    rounds: list[UntilRound] = field(default_factory=list)
    stopped: str = ""  # reached | out_of_reach | max_archs | interrupted
    forecast: CurveFit | None = None
    campaigns: list = field(default_factory=list)  # CampaignResult of each round
    measured_total: int = 0  # archs stored for the device and settings at the end (ok + error)
    space_size: int | None = None

    @property
    def reached(self) -> bool:
        return self.stopped == "reached"

    @property
    def needed(self) -> float | None:
        return None if self.forecast is None else self.forecast.needed(self.target.target_error)

    @property
    def message(self) -> str:
        t, last = self.target, (self.rounds[-1] if self.rounds else None)
        if self.stopped == "reached":
            return f"target reached at {last.n} archs: {t.metric} = {last.value:.4g} ({self.model}, {FOLDS}-fold CV)"
        if self.stopped == "out_of_reach":
            asym = t.value(self.forecast.c)
            if self.forecast.c >= t.target_error:
                return (f"target out of reach: the learning curve levels off at {t.metric} ~ {asym:.4g} (asymptote), "
                        f"{self.measured_total} archs measured; {t} needs a better model or less noisy "
                        "measurements, not more archs")
            return (f"target out of reach: the learning curve needs ~{self.needed} archs for {t}, more than "
                    f"{REACH_MARGIN:g}x --max-archs {self.max_archs} (it levels off at {t.metric} ~ {asym:.4g}), "
                    f"{self.measured_total} archs measured")
        if self.stopped == "interrupted":
            return f"interrupted after {self.measured_total} archs; the same command resumes"
        got = f"{t.metric} = {last.value:.4g}" if last is not None and last.value is not None else "not judged"
        whole_space = self.space_size is not None and self.space_size <= self.max_archs
        cap = f"all {self.space_size} archs of the space" if whole_space else f"--max-archs {self.max_archs}"
        need = self.needed
        fc = "" if need is None else (f"; the forecast needs ~{need} archs" if math.isfinite(need) else
                                      "; the forecast never gets there")
        return f"target not reached: {cap} measured ({self.measured_total}), {got}{fc}"

    def to_dict(self) -> dict:
        f = self.forecast
        need = self.needed
        return {"metric": self.target.metric, "target": self.target.target, "model": self.model,
                "folds": FOLDS, "max_archs": self.max_archs,
                "rounds": [{"n": r.n, "value": r.value, "new": r.new} for r in self.rounds],
                "reached": self.reached, "stopped": self.stopped,
                "forecast": None if f is None else {
                    "a": f.a, "b": f.b, "c": f.c, "asymptote": self.target.value(f.c),
                    "needed": need if need is not None and math.isfinite(need) else None,
                    "reachable": need is not None and math.isfinite(need)},
                "message": self.message}


def judge(store, space, device_id: str, target: UntilTarget, model: str, seed: int) -> UntilRound:
    """Cross-validate ``model`` on every arch of ``space`` stored (status ok) for the device."""
    from hwnas.predictors import cross_validate, load_store_data

    if not _has_ok_rows(store, space.name, device_id):  # nothing measured yet, or every row an error
        return UntilRound(0, None, 0)
    data = load_store_data(store.path, space, device_id)
    if len(data) < MIN_ARCHS:
        return UntilRound(len(data), None, 0)
    m = cross_validate(model, space, data.archs, data.latency_ms, folds=FOLDS, seed=seed)
    v = m[target.key]
    return UntilRound(len(data), float(v) if v is not None and math.isfinite(v) else None, 0)


def _has_ok_rows(store, space: str, device_id: str) -> bool:
    sql = "SELECT 1 FROM latency WHERE space=? AND device_id=? AND status='ok' LIMIT 1"
    return store.conn.execute(sql, (space, device_id)).fetchone() is not None


def _open_round_size(store, cfg, dev: str) -> int | None:
    """The size of an unfinished campaign of these settings (a killed round), if any."""
    from hwnas.profiling.campaign import campaign_key

    for k in range(cfg.num_archs, 0, -1):
        if store.open_campaign(campaign_key(dataclasses.replace(cfg, num_archs=k), dev)) is not None:
            return k
    return None


def run_until(store, cfg, target: UntilTarget, *, model: str = "xgb", max_archs: int = 2000, run_round=None,
              on_round=None) -> UntilResult:
    """Campaign rounds of ``cfg.num_archs`` new archs into ``store`` until ``target`` is met by
    ``model``'s cross-validated metric, the learning curve says it cannot be, or
    ``max_archs`` archs are stored.  ``run_round(cfg) -> CampaignResult`` runs one round
    (default ``run_campaign(store, cfg)``; the CLI passes one with a progress bar);
    ``on_round(round, result)`` after each judgement."""
    from hwnas.predictors import predictor_class
    from hwnas.profiling.campaign import _resolution_filter, campaign_device, check_config, run_campaign
    from hwnas.space import get_space

    predictor_class(model)  # an unknown name fails before anything is measured
    if cfg.num_archs < 1:
        raise ProfilingError(f"--until needs a round size (-n) >= 1, got {cfg.num_archs}")
    if max_archs < 1:
        raise ProfilingError(f"--max-archs must be >= 1, got {max_archs}")
    check_config(cfg)
    res_filter = _resolution_filter(cfg)
    space = get_space(cfg.space)
    dev = store.add_device(campaign_device(cfg))
    run_round = run_round or (lambda c: run_campaign(store, c))
    out = UntilResult(target, model, max_archs, device_id=dev, space_size=space.size())
    cap = min(max_archs, space.size())

    def stored() -> int:
        return len(store.measured_archs(dev, cfg.space, batch=cfg.batch_size, precision=cfg.precision, ep=cfg.ep,
                                        resolution=res_filter))

    def judged(new: int) -> None:
        r = dataclasses.replace(judge(store, space, dev, target, model, cfg.seed), new=new)
        out.rounds.append(r)
        pts = [(x.n, target.error(x.value)) for x in out.rounds if x.value is not None]
        if len(pts) >= MIN_ROUNDS_FOR_FORECAST:
            out.forecast = fit_learning_curve(*zip(*pts))
        if on_round is not None:
            on_round(r, out)

    if stored() >= MIN_ARCHS:
        judged(0)
    while True:
        out.measured_total = stored()
        last = out.rounds[-1] if out.rounds else None
        if last is not None and target.reached(last.value):
            out.stopped = "reached"
            break
        need = out.needed
        judged_rounds = sum(1 for x in out.rounds if x.value is not None)
        if need is not None and need > REACH_MARGIN * max_archs and judged_rounds >= MIN_ROUNDS_TO_GIVE_UP:
            out.stopped = "out_of_reach"
            break
        if out.measured_total >= cap:
            out.stopped = "max_archs"
            break
        size = _open_round_size(store, cfg, dev) or min(cfg.num_archs, cap - out.measured_total)
        res = run_round(dataclasses.replace(cfg, num_archs=size))
        out.campaigns.append(res)
        if res.interrupted:
            out.measured_total = stored()
            out.stopped = "interrupted"
            break
        if res.measured == 0 and res.skipped == 0:
            raise ProfilingError(f"a round of {size} archs measured nothing; stopping instead of looping")
        judged(res.measured)
    logger.info("until %s: %s", target, out.message)
    return out


def merge_results(results: list, device_id: str):
    """One ``CampaignResult`` that sums the rounds, for the plain report (an empty one, id
    None, when no round ran: the stored archs already decided)."""
    from hwnas.profiling.campaign import CampaignResult

    if not results:
        return CampaignResult(None, device_id, 0)
    first, last = results[0], results[-1]
    m = dataclasses.replace(last, planned=sum(r.planned for r in results), measured=sum(r.measured for r in results),
                            errors=sum(r.errors for r in results), skipped=sum(r.skipped for r in results),
                            resumed=first.resumed, wall_s=sum(r.wall_s for r in results),
                            timed_s=sum(r.timed_s for r in results), rows=[x for r in results for x in r.rows],
                            speed_factors=[x for r in results for x in r.speed_factors])
    m.canary = next((r.canary for r in reversed(results) if r.canary), None)
    ranges = [r.speed_range for r in results if r.speed_range]
    m.speed_range = (min(lo for lo, _ in ranges), max(hi for _, hi in ranges)) if ranges else None
    return m
