"""Search: strategies (ask/tell), training samplers, distributions, budgets and penalties, the
search loop.

Built-in strategies: ``random``, ``parsec`` (Casale et al. 2019), ``fpnas`` (Yan et al.
2021), ``ddpnas`` (Zheng et al. 2019), ``mdenas`` (Zheng et al., ICCV 2019), ``evolution``
(SPOS-style), ``greedynas`` (You et al., CVPR 2020), ``bnnas`` (Chen et al., ICCV 2021),
``attentivenas`` (Wang et al., CVPR 2021), ``dmasking`` (FBNetV2, Wan et al., CVPR 2020),
``pinas`` (Pi-NAS-style, supervised adaptation; Peng et al., ICCV 2021),
``danas`` (DA-NAS-style, after Dai et al., ECCV 2020).  Training samplers (``train_samplers.py``):
``strategy``, ``uniform``, ``greedy``, ``bn_only``, ``attentive``, ``relaxed``, ``pinas``.  A new strategy or sampler
is one module plus one import line below.
"""
from hwnas.search.base import (Strategy, create_strategy, list_strategies, register_strategy,
                               unregister_strategy)
from hwnas.search.distribution import CategoricalDistribution
from hwnas.search import random_search as _random_search
from hwnas.search.parsec import DistributionStrategy, Parsec
from hwnas.search.fpnas import FPNAS
from hwnas.search import dmasking as _dmasking
from hwnas.search import danas as _danas, ddpnas as _ddpnas, evolution as _evolution, mdenas as _mdenas
from hwnas.search.train_samplers import (Draw, SamplerContext, TrainSampler, create_train_sampler,
                                         list_train_samplers, register_train_sampler, unregister_train_sampler)
from hwnas.search import attentivenas as _attentivenas, bnnas as _bnnas, greedynas as _greedynas, pinas as _pinas
from hwnas.search.penalty import (Budget, PENALTIES, budget_check, expected_flops_fn, flops_cost_fn,
                                  latency_cost_fn, parse_flops, parse_latency_ms, select_final,
                                  shape_rewards)
from hwnas.search.loop import SearchConfig, SearchResult, plot_log, read_log, run_search

#: imported for their registrations (``@register_strategy`` / ``@register_train_sampler``)
_REGISTERING_MODULES = (_random_search, _danas, _dmasking, _ddpnas, _evolution, _mdenas, _greedynas, _bnnas, _attentivenas, _pinas)

__all__ = [
    "Budget", "CategoricalDistribution", "DistributionStrategy", "Draw", "FPNAS", "PENALTIES", "Parsec",
    "SamplerContext", "SearchConfig", "SearchResult", "Strategy", "TrainSampler", "budget_check",
    "create_strategy", "create_train_sampler", "expected_flops_fn", "flops_cost_fn", "latency_cost_fn",
    "list_strategies", "list_train_samplers", "parse_flops", "parse_latency_ms", "plot_log", "read_log",
    "register_strategy", "register_train_sampler", "run_search", "select_final", "shape_rewards",
    "unregister_strategy", "unregister_train_sampler",
]
