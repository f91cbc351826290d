"""Which archs of a search run ``hwnas export --top-k K`` trains, and which of them it ships.

Why train several: a search ranks archs by *supernet* accuracy (shared weights), which
orders stand-alone accuracy only roughly (the papers that pick from a supernet, OFA and
BigNAS, fine-tune or retrain a few), and it meets the budget by *predicted* cost.  So
the few best candidates are trained stand-alone and measured, and the ship decision is
made on what was measured.

Where the K candidates come from (``run_candidates``):

- a run with several budgets (``hwnas search --latency-budgets``: ``per_budget`` in
  result.json with more than one entry): its per-budget picks, one arch per budget (an
  arch picked for several budgets counts once, judged against the tightest of them);
  each candidate is then judged against its own budget;
- otherwise: the archs of the run's Pareto front (pareto.json) whose predicted cost meets
  the run's budget (every candidate of the front when the run had none), each judged
  against that budget.  The front is enough: every other candidate the search scored is
  dominated by a front arch (no more accurate and no cheaper).

Either way they are ranked by supernet validation accuracy, best first (ties: cheaper
first), and ``--top-k K`` takes the first K.  ``--latency-budget X`` replaces the run's
latency budget for both the selection and the check.

Which one ships (``pick_best``): the most accurate *stand-alone* model (torch top-1 on the
validation split, as in its model card) among those that meet their budget by the rule
``hwnas export`` reports: measured median latency <= the latency budget
(``within_budget``), FLOPs <= the FLOPs budget; ties go to the lower measured latency,
then the better supernet rank.  With no budget to check, the most accurate one ships;
when none meets its budget, none is picked (and the summary says so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwnas.errors import ExportError, HwnasError

__all__ = ["Candidate", "CandidateSet", "meets_budget", "pick_best", "run_candidates", "top_candidates"]


@dataclass(frozen=True)
class Candidate:
    """One arch to train: its place in the ranking and the export option that selects it."""

    rank: int  # 0: the highest supernet accuracy
    arch: str
    supernet_acc: float
    cost: float  # predicted cost in the run's cost kind (ms or multiply-adds)
    budget: float | None  # what it is judged against, in the same unit (None: no budget)
    pareto_index: int | None  # ExportConfig.pareto_index that selects it (front candidates)
    pick_budget: float | None  # ExportConfig.budget that selects it (per-budget candidates)

    def export_overrides(self) -> dict:
        """``ExportConfig`` fields that make ``export_arch`` ship this candidate."""
        if self.pareto_index is not None:
            return {"pareto_index": self.pareto_index}
        return {"budget": self.pick_budget}


@dataclass(frozen=True)
class CandidateSet:
    """Every candidate a run offers, ranked, and where they came from."""

    source: str  # "per_budget" or "pareto"
    cost_kind: str  # "latency" or "flops"
    budget: float | None  # the run's budget in the cost kind (pareto source)
    front_size: int
    candidates: tuple[Candidate, ...]

    def describe(self) -> str:
        if self.source == "per_budget":
            return "per-budget picks of the run"
        unit = "ms" if self.cost_kind == "latency" else "FLOPs"
        if self.budget is None:
            return f"Pareto-front archs of the run ({self.front_size}; the run has no budget)"
        return f"Pareto-front archs meeting the run's budget {self.budget:g} {unit} (of {self.front_size} on the front)"


def _pareto(run_dir: Path) -> dict:
    from hwnas.search.pareto import read_pareto

    try:
        return read_pareto(run_dir)
    except HwnasError:
        raise ExportError(f"--top-k ranks the run's Pareto candidates, but {str(run_dir / 'pareto.json')!r} does "
                          "not exist (a run from before Pareto fronts, or one that did not finish); export its "
                          "single pick without --top-k") from None


def run_candidates(run: dict, run_dir: str | Path, *, latency_budget_ms: float | None = None) -> CandidateSet:
    """The ranked candidates of a run (``run``: its result.json) as the module docstring says."""
    par = _pareto(Path(run_dir))
    kind, front = par["cost_kind"], par["front"]
    budgets = run.get("per_budget") or par.get("budgets") or []

    def key(c):
        return -c["acc"], c["cost"]

    if len(budgets) > 1:
        seen: dict[str, dict] = {}
        for b in sorted((b for b in budgets if b.get("arch")), key=lambda b: b["budget"]):
            seen.setdefault(b["arch"], b)  # the tightest budget it is the pick of
        ranked = sorted(seen.values(), key=key)
        override = latency_budget_ms if kind == "latency" else None
        cands = tuple(Candidate(i, b["arch"], float(b["acc"]), float(b["cost"]),
                                override if override is not None else float(b["budget"]), None, float(b["budget"]))
                      for i, b in enumerate(ranked))
        return CandidateSet("per_budget", kind, None, len(front), cands)
    budget = run.get("latency_budget_ms") if kind == "latency" else run.get("flops_budget")
    if kind == "latency" and latency_budget_ms is not None:
        budget = latency_budget_ms
    budget = None if budget is None else float(budget)
    ok = [(j, p) for j, p in enumerate(front) if budget is None or p["cost"] <= budget]
    ranked = sorted(ok, key=lambda jp: key(jp[1]))
    cands = tuple(Candidate(i, p["arch"], float(p["acc"]), float(p["cost"]), budget, j, None)
                  for i, (j, p) in enumerate(ranked))
    return CandidateSet("pareto", kind, budget, len(front), cands)


def top_candidates(run: dict, run_dir: str | Path, k: int, *,
                   latency_budget_ms: float | None = None) -> tuple[CandidateSet, list[Candidate]]:
    """(every candidate, the first ``k``); an ``ExportError`` saying how many there are when
    ``k`` is below 1 or above that."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ExportError(f"--top-k must be an integer >= 1, got {k!r}")
    cs = run_candidates(run, run_dir, latency_budget_ms=latency_budget_ms)
    n = len(cs.candidates)
    if k > n:
        raise ExportError(f"--top-k {k} asks for more candidates than the run has: {n} available "
                          f"({cs.describe()}); give --top-k {max(n, 1)} or less")
    return cs, list(cs.candidates[:k])


def meets_budget(result) -> bool | None:
    """Whether an ``ExportResult`` meets its budget(s): the measured latency within the latency
    budget (export's ``within_budget``) and the FLOPs within the FLOPs budget; None when
    there is no budget, or a latency budget that was not measured."""
    checks = []
    if result.latency_budget_ms is not None:
        checks.append(result.within_budget)
    if result.flops_budget is not None:
        checks.append(bool(result.flops <= result.flops_budget))
    if not checks or (None in checks and False not in checks):
        return None
    return all(checks)


def pick_best(records: list[dict]) -> tuple[int | None, str]:
    """(index into ``records`` of the model to ship, or None; why).  A record needs
    ``status``, ``accuracy``, ``meets_budget``, ``measured_latency_ms`` and ``rank``."""
    ok = [i for i, r in enumerate(records) if r["status"] == "ok"]
    if not ok:
        return None, "no candidate finished (see their errors)"

    def best(ix):
        inf = float("inf")
        return max(ix, key=lambda i: (records[i]["accuracy"], -(records[i]["measured_latency_ms"] or inf),
                                      -records[i]["rank"]))

    meeting = [i for i in ok if records[i]["meets_budget"] is True]
    if meeting:
        return best(meeting), f"most accurate of the {len(meeting)} of {len(ok)} trained candidate(s) meeting the budget"
    if all(records[i]["meets_budget"] is None for i in ok):
        return best(ok), f"no budget to check: most accurate of {len(ok)} trained candidate(s)"
    return None, f"none of the {len(ok)} trained candidate(s) meets its budget"
