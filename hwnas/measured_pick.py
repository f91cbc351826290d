"""Measure before training: ``hwnas export --measured-pick N`` times the search's pick on this
machine and, when it does not meet the budget by measurement, walks the run's Pareto
candidates until one does.

Why: a search pushes its pick up to the budget *by prediction*, and the pick is the arch the
predictor under-estimated most among those it liked (the winner's curse): on a fresh clone
the demo's pick was predicted 8% under its budget and measured 4.5% over it, and re-timing
repeated that within 2% (README, "The main job").  Timing an arch costs a second
(its graph with seeded weights, the profiler's own, against the canary: the rows the
predictor learned from), training it costs minutes, so the check belongs before the
training.  The export's final check then times the trained model again; it is a second
measurement, so a candidate must clear the budget with a ``margin`` (default 5%: the
paired protocol's re-measurements agree within +-5% for 82-100% of archs,
benchmarks/results/canary_gamma.md) to be taken at once.

The candidates, in order: the search's own pick, then the run's Pareto-front archs that meet
the budget by prediction, most accurate first (``hwnas.export_candidates.run_candidates``),
at most ``n`` in all.  The first that measures at or under ``budget x (1 - margin)`` ships;
when none does, the most accurate one measured at or under the budget; when none is, the
one measured fastest, and the export then reports it over budget, as it would have anyway.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from hwnas.errors import ExportError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MARGIN", "MeasuredPick", "measured_pick"]

DEFAULT_MARGIN = 0.05


@dataclass(frozen=True)
class MeasuredPick:
    """What was timed and what was chosen (``to_dict()`` goes into the model card)."""

    budget_ms: float
    margin: float
    measured: tuple  # one dict per candidate timed: arch, pareto_index, supernet_acc, predicted_ms, measured_ms
    chosen: int  # index into ``measured``
    reason: str
    reference_source: str

    @property
    def pareto_index(self) -> int | None:
        """The ``ExportConfig.pareto_index`` that ships the choice (None: the search's pick)."""
        return self.measured[self.chosen]["pareto_index"]

    def to_dict(self) -> dict:
        return asdict(self)


def _candidates(run: dict, run_dir: Path, n: int, budget_ms: float | None) -> list[dict]:
    from hwnas.export_candidates import run_candidates

    cs = run_candidates(run, run_dir, latency_budget_ms=budget_ms)
    if cs.cost_kind != "latency":
        raise ExportError("--measured-pick walks a Pareto front of predicted latencies; this run's front is in "
                          f"{cs.cost_kind} (a FLOPs-budget search): export its pick without --measured-pick")
    out = [{"arch": run["arch"], "pareto_index": None, "supernet_acc": run.get("supernet_val_acc"),
            "predicted_ms": run.get("predicted_latency_ms")}]
    for c in cs.candidates:
        if len(out) >= n:
            break
        if c.arch != run["arch"]:
            out.append({"arch": c.arch, "pareto_index": c.pareto_index, "supernet_acc": c.supernet_acc,
                        "predicted_ms": c.cost})
    return out


def _choose(measured: list[dict], budget: float, margin: float) -> tuple[int, str]:
    for i, m in enumerate(measured):
        if m["measured_ms"] <= budget * (1 - margin):
            what = "the search's pick" if i == 0 else f"candidate {i} (the search's pick measured over)"
            return i, f"{what} measured {m['measured_ms']:.4f} ms, at least {100 * margin:.0f}% under the budget"
    under = [i for i, m in enumerate(measured) if m["measured_ms"] <= budget]
    if under:
        return under[0], (f"no candidate measured {100 * margin:.0f}% under the budget; candidate {under[0]} "
                          "is the most accurate measured under it")
    fastest = min(range(len(measured)), key=lambda i: measured[i]["measured_ms"])
    return fastest, f"none of the {len(measured)} candidates measured under the budget; shipping the fastest"


def measured_pick(run: dict, run_dir: str | Path, n: int, *, margin: float = DEFAULT_MARGIN, ep: str = "cpu",
                  threads: int = 1, warmup: int = 10, runs: int = 50, sessions: int = 3, gap_s: float = 0.5,
                  allow_fallback: bool = False, budget_ms: float | None = None) -> MeasuredPick:
    """Time up to ``n`` candidates of the search run ``run`` (its result.json) and choose one
    (module docstring).  Needs a latency budget (the run's, or ``budget_ms``) and the run's
    predictor file, whose canary and reference the measurements use, as the export's final
    check does (``hwnas.profiling.protocol``)."""
    from hwnas.predictors import load_predictor
    from hwnas.profiling.protocol import DataTimer
    from hwnas.space import get_space

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ExportError(f"--measured-pick must be an integer >= 1 (candidates to time), got {n!r}")
    if not 0.0 <= margin < 0.5:
        raise ExportError(f"--measured-margin must be in [0, 0.5), got {margin!r}")
    budget = budget_ms if budget_ms is not None else run.get("latency_budget_ms")
    if budget is None:
        raise ExportError("--measured-pick checks candidates against a latency budget, and the run has none: "
                          "give --latency-budget")
    if len(run.get("per_budget") or []) > 1:
        raise ExportError("--measured-pick checks one budget; this run has several: choose one with --budget")
    pred_path = run.get("predictor")
    if not pred_path or not Path(pred_path).is_file():
        raise ExportError(f"--measured-pick times candidates against the run's predictor's canary, but its "
                          f"predictor {pred_path!r} is not there")
    space = get_space(run["space"])
    fp = load_predictor(pred_path, space=space, force=True).fingerprint
    cands = _candidates(run, Path(run_dir), n, budget_ms)
    timer = DataTimer(space, fp, run.get("resolution"), ep=ep, threads=threads, allow_fallback=allow_fallback)
    measured = []
    for i, c in enumerate(cands):
        m = timer.measure(c["arch"], warmup=warmup, runs=runs, sessions=sessions, gap_s=gap_s)
        measured.append(dict(c, measured_ms=m.latency_ms, speed_factor=m.speed_factor))
        log.info("measured pick: candidate %d %s predicted %s ms, measured %.4f ms (budget %.4f)", i, c["arch"],
                 "?" if c["predicted_ms"] is None else f"{c['predicted_ms']:.4f}", m.latency_ms, budget)
        if m.latency_ms <= budget * (1 - margin):
            break
    chosen, reason = _choose(measured, float(budget), margin)
    return MeasuredPick(float(budget), margin, tuple(measured), chosen, reason, timer.reference.source)
