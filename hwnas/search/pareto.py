"""The accuracy / cost trade-off a search found: a Pareto front, and one pick per budget.

Why: a user with a latency budget rarely has *one* budget (a phone and a server, 30 and 60
fps), and one point hides what a few percent more latency would buy.  The supernet is
trained once; every arch it can evaluate is a candidate.  At the end of a search the loop
scores a candidate pool on the whole validation split with the shared weights (one-shot
evaluation, as OFA and BigNAS pick per-budget subnets from one supernet):

- every distinct arch the strategy sampled (most often sampled first);
- the distribution's most likely archs (``top_k``), when the strategy holds one;
- a seeded uniform sample of the space, so budgets far from the one the search was steered
  by still find candidates the supernet trained during its uniform warm-up.

``front`` keeps the non-dominated candidates (no other is both cheaper and at least as
accurate, or as cheap and more accurate), sorted by cost.  ``pick(budget)`` is the most
accurate candidate whose cost meets the budget.  Supernet accuracies rank archs; they are
not the stand-alone accuracy ``hwnas export`` trains for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.errors import SearchError


@dataclass(frozen=True)
class Point:
    arch: str
    cost: float
    acc: float
    loss: float
    sampled: int  # times the strategy sampled it during the search (0: from top-k or the uniform pool)


def front(points: list[Point]) -> list[Point]:
    """Non-dominated points (lower cost, higher accuracy), sorted by cost."""
    ordered = sorted(points, key=lambda p: (p.cost, -p.acc, p.loss))
    out: list[Point] = []
    best = -np.inf
    for p in ordered:
        if p.acc > best:
            out.append(p)
            best = p.acc
    return out


def pick(points: list[Point], budget: float) -> Point | None:
    """The most accurate point with ``cost <= budget`` (ties: lower loss, then cheaper)."""
    ok = [p for p in points if p.cost <= budget]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.acc, -p.loss, -p.cost))


def candidates(space, sampled_counts: dict[str, int], strategy, *, max_sampled: int = 200, top_k: int = 32,
               uniform: int = 100, seed: int = 0) -> dict[str, int]:
    """``{arch string: times sampled}`` of the pool described in the module docstring."""
    pool: dict[str, int] = {}
    for a, n in sorted(sampled_counts.items(), key=lambda kv: -kv[1])[:max_sampled]:
        pool[a] = n
    if getattr(strategy, "is_distribution", False):
        for a, _ in strategy.dist.top_k(top_k):
            pool.setdefault(str(a), 0)
    rng = np.random.default_rng(seed + 4243)
    for _ in range(uniform):
        pool.setdefault(str(space.sample(rng)), 0)
    return pool


def to_json(points: list[Point], cost_kind: str, budgets: list[dict]) -> dict:
    fr = front(points)
    return {"cost_kind": cost_kind, "n_candidates": len(points),
            "front": [vars(p) for p in fr], "budgets": budgets,
            "note": "supernet validation accuracy (shared weights) ranks archs; hwnas export trains the stand-alone model"}


def plot(points: list[Point], budgets: list[dict], cost_kind: str, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fr = front(points)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter([p.cost for p in points], [p.acc for p in points], s=8, alpha=0.35, label="candidates")
    ax.plot([p.cost for p in fr], [p.acc for p in fr], "o-", color="tab:red", ms=4, lw=1, label="Pareto front")
    for b in budgets or ():  # None: a run without a budget
        ax.axvline(b["budget"], color="grey", ls="--", lw=0.8)
        if b.get("arch"):
            ax.plot([b["cost"]], [b["acc"]], "*", color="black", ms=10)
    ax.set_xlabel("predicted latency (ms)" if cost_kind == "latency" else "FLOPs (multiply-adds)")
    ax.set_ylabel("supernet val accuracy")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def read_pareto(run_dir) -> dict:
    """A run's ``pareto.json`` (``hwnas export --budget / --pareto-index`` reads it)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "pareto.json"
    if not path.is_file():
        raise SearchError(f"{str(path)!r} does not exist: the run predates Pareto fronts or did not finish; "
                          "export its single pick without --budget / --pareto-index")
    return json.loads(path.read_text())
