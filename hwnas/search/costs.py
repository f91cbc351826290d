"""The budget of one run and the cost functions derived from it.

Why its own module: the budget stays in the driver, never inside a strategy or a training
sampler (DESIGN "Strategy").  They see it in three ways only: rewards shaped by the penalty
(``penalty.shape_rewards``), a differentiable penalty passed to ``tell``, or the feasibility
predicate ``RunCosts.feasible()`` (``arch -> cost <= budget``) that evolution and GreedyNAS's
rejection sampling call.  The budget is checked against the space (``penalty.budget_check``)
before any data is loaded or any file is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hwnas.errors import SearchError
from hwnas.search import penalty as pen
from hwnas.space import Arch


@dataclass
class RunCosts:
    """The budget of one run and the cost callables derived from it (see ``penalty.py``)."""

    predictor: object | None
    budget: pen.Budget | None
    cost_fn: pen.CostFn | None  # the budget's cost, per arch
    crange: pen.CostRange | None  # from ``budget_check``; its cheapest arch is the final fallback
    lat_fn: pen.CostFn | None = None  # predicted latency, logged and reported whenever a predictor is given
    expected_fn: Callable | None = None  # probs -> expected cost (logged; the differentiable penalty's term)
    penalty_fn: Callable | None = None  # the differentiable penalty, passed to ``strategy.tell``

    @property
    def limit(self) -> float | None:
        return None if self.budget is None else self.budget.limit

    def feasible(self) -> Callable[[Arch], bool] | None:
        """``arch -> cost(arch) <= budget`` by the budget's cost (prediction or FLOPs); None without a budget."""
        if self.cost_fn is None:
            return None
        cost_fn, limit = self.cost_fn, self.limit
        return lambda arch: float(cost_fn([arch])[0]) <= limit


def load_predictor(config, space):
    """The run's latency predictor (None without one), refused for another device or space."""
    if not config.predictor:
        return None
    from hwnas.predictors import load_predictor as load
    from hwnas.profiling.protocol import check_predictor_device

    predictor = load(config.predictor, space=space, force=config.force)
    # another machine, or this one changed since the predictor's data: say so before searching
    check_predictor_device(predictor.fingerprint)
    return predictor


def budget_costs(config, space, cost_res: int | None) -> RunCosts:
    """Load the predictor, build the budget's cost function and check the budget (before any file or data)."""
    predictor = load_predictor(config, space)
    budget = cost_fn = None
    if config.latency_budget_ms is not None:
        budget = pen.Budget("latency", float(config.latency_budget_ms))
        cost_fn = pen.latency_cost_fn(predictor, quantile=config.budget_quantile)
    elif config.flops_budget is not None:
        budget = pen.Budget("flops", float(config.flops_budget))
        # checked with the space's class count first (fail fast, before loading data)
        cost_fn = pen.flops_cost_fn(space, cost_res, None)
    crange = pen.budget_check(space, budget, cost_fn, seed=config.seed) if budget is not None else None
    return RunCosts(predictor, budget, cost_fn, crange)


def data_costs(costs: RunCosts, config, space, cost_res: int | None, ncls: int) -> None:
    """Complete ``costs`` once the dataset's class count is known (it sets the classifier's FLOPs)."""
    budget, predictor = costs.budget, costs.predictor
    if budget is not None and budget.kind == "flops":
        costs.cost_fn = pen.flops_cost_fn(space, cost_res, ncls)
        costs.expected_fn = pen.expected_flops_fn(space, cost_res, ncls)
    elif budget is not None and getattr(predictor, "differentiable", False):
        costs.expected_fn = predictor.expected_latency_torch
    if predictor is not None:
        # a latency budget's cost function already predicts (and memoises) the same numbers
        latency_budget = budget is not None and budget.kind == "latency"
        # (not with a tail budget: its cost is a quantile, the logged latency is the median prediction)
        costs.lat_fn = (costs.cost_fn if latency_budget and config.budget_quantile is None
                        else pen.latency_cost_fn(predictor))
    if config.penalty == "differentiable" and budget is not None:
        if costs.expected_fn is None:
            raise SearchError(f"the differentiable penalty needs a differentiable latency predictor (an 'mlp'); "
                              f"{config.predictor} is a {type(predictor).__name__}: use --penalty hinge or mnas")
        costs.penalty_fn = pen.differentiable_penalty(costs.expected_fn, budget.limit, config.penalty_weight)
