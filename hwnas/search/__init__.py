"""Search: strategies (ask/tell), distributions, budgets and penalties, the search loop.

Built-in strategies: ``random``, ``parsec`` (Casale et al. 2019), ``fpnas`` (Yan et al.
2021), ``ddpnas`` (Zheng et al. 2019), ``mdenas`` (Zheng et al., ICCV 2019), ``evolution``
(SPOS-style).  A new strategy is one module plus one import line below.
"""
from hwnas.search.base import (Strategy, create_strategy, list_strategies, register_strategy,
                               unregister_strategy)
from hwnas.search.distribution import CategoricalDistribution
from hwnas.search import random_search as _random_search  # noqa: F401  (registers "random")
from hwnas.search.parsec import DistributionStrategy, Parsec
from hwnas.search.fpnas import FPNAS
from hwnas.search import ddpnas as _ddpnas, evolution as _evolution, mdenas as _mdenas  # noqa: F401  (register)
from hwnas.search.penalty import (Budget, PENALTIES, budget_check, expected_flops_fn, flops_cost_fn,
                                  latency_cost_fn, parse_flops, parse_latency_ms, select_final,
                                  shape_rewards)
from hwnas.search.loop import SearchConfig, SearchResult, plot_log, read_log, run_search

__all__ = [
    "Budget", "CategoricalDistribution", "DistributionStrategy", "FPNAS", "PENALTIES", "Parsec",
    "SearchConfig", "SearchResult", "Strategy", "budget_check", "create_strategy",
    "expected_flops_fn", "flops_cost_fn", "latency_cost_fn", "list_strategies", "parse_flops",
    "parse_latency_ms", "plot_log", "read_log", "register_strategy", "run_search", "select_final",
    "shape_rewards",
    "unregister_strategy",
]
