"""The loop-level battery over every registered strategy (the registry's list, not a hard-coded
one): an impossible budget is refused before any file or training, and a short real run on
``micro``/digits ends with an arch that meets its FLOPs budget.

Each strategy runs with its own preset (training sampler, search stage, penalty, BN); the only
settings added are what makes it small (evolution's population, a short search stage) or what
it cannot run without (danas's class curriculum), taken from the strategy's class, not its name
where a capability says it.
"""
from __future__ import annotations

import pytest

from hwnas.cost import cost_extremes
from hwnas.errors import SearchError
from hwnas.search import list_strategies, run_search
from hwnas.search.base import strategy_class
from hwnas.search.evolution import Evolution
from tests.search.test_search_loop import _micro_budget, _micro_config


def _small(name: str) -> dict:
    cls = strategy_class(name)
    kw = dict(epochs=2, limit=120)
    if issubclass(cls, Evolution):
        kw["strategy_params"] = {"population": 4, "parents": 2, "mutations": 2, "crossovers": 2}
    if cls.preset.get("search_stage_steps"):
        kw["search_stage_steps"] = 2
    if getattr(cls, "needs_class_schedule", False):
        kw.update(epochs=3, class_schedule=(5, 10))
    return kw


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_refuses_an_impossible_budget_before_any_file(tmp_path, micro_space, name):
    (lo, _), _ = cost_extremes(micro_space)
    with pytest.raises(SearchError, match="below the cheapest architecture"):
        run_search(_micro_config(tmp_path, name, strategy=name, flops_budget=lo * 0.5, **_small(name)))
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_ends_within_its_flops_budget(tmp_path, micro_space, name):
    budget = _micro_budget(micro_space, 0.3)
    res = run_search(_micro_config(tmp_path, name, strategy=name, flops_budget=budget, **_small(name)))
    assert res.flops <= budget and res.strategy == name
    assert res.archs_sampled > 0 and (tmp_path / name / "result.json").exists()
