"""Budgets and penalties: how latency or FLOPs enter the search.

Costs enter as a callable ``cost_fn(archs) -> np.ndarray`` (predicted latency in ms from
a ``hwnas.predictors`` model, or analytic FLOPs from ``hwnas.cost.arch_cost``); the
strategy never sees the budget itself (Optuna's constraints-as-a-callable idea).

Reward-shaped penalties (the reward ``r`` of a sampled arch is ``-val loss`` or val
accuracy measured with the shared supernet weights; ``c`` its cost, ``T`` the budget):

- ``hinge`` (default; FP-NAS, Yan et al. 2021, "hinge-linear" FLOPs penalty): zero under
  the budget, linear above it,
  ``r' = r - beta * max(0, c / T - 1)``  (``beta = penalty_weight``).
- ``mnas`` (MnasNet, Tan et al. CVPR 2019, eq. 2, soft constraint ``alpha = beta = w``):
  ``r' = ACC * (c / T) ** w`` with ``w = mnas_w = -0.07``; it always uses accuracy, as
  MnasNet does, whatever ``reward`` says.

Differentiable penalty (``differentiable``; ProxylessNAS, Cai et al. 2019, Sec. 3.3, and
FBNet, Wu et al. 2019, eq. 5, with a learned predictor or the exact analytic model in
place of the lookup table): the *expected* cost of the distribution,
``E[c] = E_{alpha ~ P_theta}[c(alpha)]``, a differentiable function of the probabilities,
is added to the strategy's loss as ``mu * max(0, E[c] / T - 1)`` (``mu =
penalty_weight``); rewards are then left unshaped.

- Expected latency: the MLP predictor's ``expected_latency_torch(probs)`` (the predictor
  evaluated on the soft encoding, i.e. linearised around the distribution; exact for
  one-hot probabilities).
- Expected FLOPs (``expected_flops_fn``, from ``hwnas.cost_table.CostTable``): **exact**,
  no linearisation.  A layer's MACs depend only on its op and its input channels, and the
  decisions are independent, so the input-channel count follows a Markov chain:
  ``P(c_{l+1} = c') = sum_c P(c_l = c) sum_j p_l(j) [out(l, j, c) = c']`` and
  ``E[FLOPs] = sum_l sum_c P(c_l = c) sum_j p_l(j) F_l(j, c) + sum_c P(c_L = c) F_fixed(c)``
  (summed again over the resolution's probabilities when it is searchable).

FP-NAS's cost term (``logcost``; Yan et al. 2021, Sec. 3.4 as re-typed in the sources of
``../shared/research/fpnas_fidelity.md``): ``L = -log P(y | X, w, alpha) + beta log C(alpha)``
with ``C(alpha) ~ (1/K) sum_k C(A_k)`` and ``C(A) = max(0, c(A) / T - 1)`` (FLOPs in the
paper; here FLOPs or predicted latency).  Its score-function gradient is
``grad log C = sum_k C_k grad log p(A_k) / sum_k C_k``, so the surrogate added to the
strategy's loss is ``beta * sum_k (C_k / sum_j C_j) log p(A_k)`` with the weights held fixed
(``log_cost_penalty``); rewards stay unshaped.  As transcribed, ``log C`` is undefined when
every sample meets the budget (``C = 0``); the term is then zero for that step (*our reading*:
nothing to push away from), which the sources neither confirm nor contradict.

Before training, ``budget_check`` refuses a budget below the cheapest architecture
(exact for FLOPs via ``hwnas.cost.cost_extremes``; for latency the minimum predicted
latency found by coordinate descent from the FLOPs-cheapest arch and random samples) and
warns when the budget is above the most expensive one (it does not bind).

The final architecture (``select_final``) is the most likely one under the distribution
that meets the budget, checked with ``cost_fn`` itself.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hwnas.errors import PredictorError, SearchError, valid_list
from hwnas.space import Arch, SearchSpace

log = logging.getLogger(__name__)

PENALTIES = ("hinge", "mnas", "differentiable", "logcost")
CostFn = Callable[[Sequence[Arch]], np.ndarray]

_LAT_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_FLOP_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_latency_ms(text: str | float) -> float:
    """``'2ms'``, ``'2.5'`` (ms), ``'500us'``, ``'0.01s'`` -> milliseconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(ms|us|µs|s)?\s*", str(text))
        if not m:
            raise SearchError(f"latency budget must be a number with an optional unit (ms, us, s), "
                              f"like '2ms', '2.5' or '500us'; got {text!r}")
        value = float(m.group(1)) * _LAT_UNITS[m.group(2) or ""]
    if not (value > 0 and math.isfinite(value)):
        raise SearchError(f"latency budget must be > 0 ms, got {text!r}")
    return value


def parse_flops(text: str | float) -> float:
    """``'300M'``, ``'1.5G'``, ``'20K'``, ``'300000'`` -> multiply-adds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([kKmMgGtT]?)\s*(?:FLOPS|flops|FLOPs)?\s*", str(text))
        if not m:
            raise SearchError(f"FLOPs budget must be a number with an optional unit (K, M, G), "
                              f"like '300M' or '1.5G'; got {text!r}")
        value = float(m.group(1)) * _FLOP_UNITS[m.group(2).upper()]
    if not (value > 0 and math.isfinite(value)):
        raise SearchError(f"FLOPs budget must be > 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Budget:
    """A cost limit: ``kind`` is 'latency' (ms, predicted) or 'flops' (multiply-adds)."""

    kind: str
    limit: float

    def __post_init__(self):
        if self.kind not in ("latency", "flops"):
            raise SearchError(f"budget kind must be 'latency' or 'flops', got {self.kind!r}")
        if not (self.limit > 0 and math.isfinite(self.limit)):
            raise SearchError(f"{self.kind} budget must be a positive number, got {self.limit}")

    @property
    def unit(self) -> str:
        return "ms" if self.kind == "latency" else "MACs"

    def margin(self, cost: float) -> float:
        """Fraction inside the budget: ``(T - c) / T`` (negative when over)."""
        return (self.limit - float(cost)) / self.limit


# -- cost functions -------------------------------------------------------------
def flops_cost_fn(space: SearchSpace, resolution: int | None = None, num_classes: int | None = None) -> CostFn:
    """Analytic FLOPs (multiply-adds) of each arch, memoised."""
    from hwnas.cost import arch_cost

    cache: dict[Arch, float] = {}

    def fn(archs: Sequence[Arch]) -> np.ndarray:
        out = []
        for a in archs:
            if a not in cache:
                cache[a] = float(arch_cost(space, a, resolution, num_classes).flops)
            out.append(cache[a])
        return np.asarray(out, dtype=np.float64)

    return fn


def latency_cost_fn(predictor, quantile: float | None = None) -> CostFn:
    """Predicted latency (ms) of each arch from a fitted ``hwnas.predictors`` model, memoised.

    With ``quantile`` (a tail-latency budget, e.g. 0.9): the ``quantile`` of the predictive
    distribution, ``predicted * exp(Q_q(r))`` with ``r`` the predictor's out-of-fold log
    residuals (``hwnas.predictors._uncertainty``): the latency the arch stays under with that
    probability, as far as the predictor's own error goes.  The run-to-run spread of one
    arch (the p90 each stored row keeps) is not added: see README "Not built"."""
    cache: dict[Arch, float] = {}
    factor = 1.0
    if quantile is not None:
        from hwnas.predictors._uncertainty import residuals

        try:
            factor = float(np.exp(np.quantile(residuals(predictor), float(quantile))))
        except PredictorError as e:  # no residuals: say how to get them
            raise SearchError(f"--budget-quantile needs the predictor's uncertainty estimate: {e}") from None

    def fn(archs: Sequence[Arch]) -> np.ndarray:
        archs = list(archs)
        missing = list(dict.fromkeys(a for a in archs if a not in cache))
        if missing:
            pred = factor * np.asarray(predictor.predict(missing), dtype=np.float64)
            cache.update(zip(missing, pred.tolist()))
        return np.asarray([cache[a] for a in archs], dtype=np.float64)

    return fn


# -- reward shaping -------------------------------------------------------------
def shape_rewards(rewards, costs, budget: float | None, penalty: str = "hinge", *,
                  weight: float = 2.0, mnas_w: float = -0.07, accuracy=None) -> np.ndarray:
    """Fold the budget into the rewards (see the module docstring for the formulas)."""
    if penalty not in PENALTIES:
        raise SearchError(f"penalty must be one of {valid_list(PENALTIES)}, got {penalty!r}")
    rewards = np.asarray(rewards, dtype=np.float64)
    if budget is None:
        return rewards.copy() if penalty != "mnas" else np.asarray(accuracy, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if np.any(~np.isfinite(costs)):
        raise SearchError(f"cost function returned non-finite costs: {costs.tolist()}")
    ratio = costs / float(budget)
    if penalty == "hinge":
        return rewards - weight * np.maximum(0.0, ratio - 1.0)
    if penalty == "mnas":
        if accuracy is None:
            raise SearchError("the mnas penalty needs the accuracy of each arch")
        return np.asarray(accuracy, dtype=np.float64) * np.power(np.maximum(ratio, 1e-12), mnas_w)
    return rewards.copy()  # differentiable, logcost: the budget enters through the strategy's loss


def log_cost_penalty(dist, archs, costs, budget: float, weight: float = 2.0):
    """FP-NAS's ``beta log C(alpha)`` for one step's samples, as a ``tell(penalty=...)`` callable
    (``None`` when every sample meets the budget: ``C = 0``, nothing to push away from)."""
    import torch

    c = np.maximum(0.0, np.asarray(costs, dtype=np.float64) / float(budget) - 1.0)
    if c.sum() <= 0:
        return None
    w = torch.as_tensor(c / c.sum(), dtype=torch.float64)

    def fn(_probs):
        return weight * (w * dist.log_prob(list(archs))).sum()

    return fn


def expected_flops_fn(space: SearchSpace, resolution: int | None = None, num_classes: int | None = None):
    """``probs -> E[FLOPs]`` (torch scalar, exact; see the module docstring)."""
    from hwnas.cost_table import CostTable

    table = CostTable(space, resolution, num_classes=num_classes)
    return lambda probs: table.expected_costs(probs)["total_flops"]


def differentiable_penalty(expected_fn, budget: float, weight: float = 2.0):
    """``probs -> mu * max(0, E[c] / T - 1)`` for ``Strategy.tell(..., penalty=...)``."""
    import torch

    def fn(probs):
        return weight * torch.relu(expected_fn(probs) / float(budget) - 1.0)

    return fn


# -- before training: does the budget make sense? -----------------------------------
@dataclass(frozen=True)
class CostRange:
    """Cheapest and most expensive arch of the space by the budget's cost."""

    min_cost: float
    min_arch: Arch
    max_cost: float
    max_arch: Arch
    exact: bool  # False: found by local search on a predictor


def _coordinate_descent(space: SearchSpace, cost_fn: CostFn, start: Arch, sign: float, sweeps: int = 3) -> tuple[Arch, float]:
    """Minimise ``sign * cost`` one decision at a time (all choices of a decision in one batch)."""
    idx = list(space.indices(start))
    best = sign * float(cost_fn([start])[0])
    for _ in range(sweeps):
        improved = False
        for i, d in enumerate(space.decisions):
            cands = []
            for j in range(len(d.choices)):
                cand = list(idx)
                cand[i] = j
                cands.append(space.from_indices(cand))
            costs = sign * cost_fn(cands)
            j = int(np.argmin(costs))
            if costs[j] < best - 1e-12:
                best, idx[i], improved = float(costs[j]), j, True
        if not improved:
            break
    return space.from_indices(idx), sign * best


def cost_range(space: SearchSpace, budget: Budget, cost_fn: CostFn, *, resolution=None, num_classes=None,
               n_random: int = 256, seed: int = 0) -> CostRange:
    """The cost range the budget is checked against (see ``budget_check``)."""
    from hwnas.cost import cost_extremes

    (_, lo_arch), (_, hi_arch) = cost_extremes(space, "flops")
    if budget.kind == "flops":
        lo, hi = cost_fn([lo_arch, hi_arch])
        return CostRange(float(lo), lo_arch, float(hi), hi_arch, exact=True)
    rng = np.random.default_rng(seed)
    pool = [lo_arch, hi_arch] + [space.sample(rng) for _ in range(n_random)]
    costs = cost_fn(pool)
    lo_start, hi_start = pool[int(np.argmin(costs))], pool[int(np.argmax(costs))]
    lo_arch, lo = _coordinate_descent(space, cost_fn, lo_start, 1.0)
    hi_arch, hi = _coordinate_descent(space, cost_fn, hi_start, -1.0)
    return CostRange(lo, lo_arch, hi, hi_arch, exact=False)


def budget_check(space: SearchSpace, budget: Budget, cost_fn: CostFn, **kw) -> CostRange:
    """Refuse a budget below the cheapest arch; warn when it is above the most expensive."""
    rng_ = cost_range(space, budget, cost_fn, **kw)
    unit = budget.unit
    if budget.limit < rng_.min_cost:
        how = "exact" if rng_.exact else "lowest predicted, by local search"
        raise SearchError(
            f"{budget.kind} budget {budget.limit:.6g} {unit} is below the cheapest architecture of space "
            f"{space.name!r} ({rng_.min_cost:.6g} {unit}, {how}: {rng_.min_arch}); valid budgets are "
            f">= {rng_.min_cost:.6g} {unit}"
        )
    if budget.limit >= rng_.max_cost:
        msg = (f"{budget.kind} budget {budget.limit:.6g} {unit} is above the most expensive architecture of "
               f"space {space.name!r} ({rng_.max_cost:.6g} {unit}): the budget does not bind")
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return rng_


# -- after training: the final architecture -------------------------------------------
@dataclass(frozen=True)
class FinalChoice:
    arch: Arch
    cost: float | None
    rank: int  # position in the strategy's preference order (-1: repaired / fallback)
    how: str  # 'top' | 'ranked' | 'repaired' | 'fallback' | 'unbudgeted'


def select_final(strategy, cost_fn: CostFn | None, budget: float | None, *, k: int = 256,
                 fallback: Arch | None = None) -> FinalChoice:
    """The most likely (or best-rewarded) arch that meets ``budget`` by ``cost_fn``.

    Order: the strategy's top-``k`` (exact most-likely archs for a distribution; best mean
    reward for random search); if none fits, a greedy repair of the top arch that swaps,
    one decision at a time, to the choice that loses the least log-probability per unit of
    cost saved; finally ``fallback`` (the cheapest arch).
    """
    ranked = strategy.ranked(k)
    if not ranked:
        raise SearchError("the strategy has no result to choose from")
    if budget is None or cost_fn is None:
        return FinalChoice(ranked[0], None if cost_fn is None else float(cost_fn([ranked[0]])[0]), 0, "unbudgeted")
    costs = cost_fn(ranked)
    for i, (a, c) in enumerate(zip(ranked, costs)):
        if c <= budget:
            return FinalChoice(a, float(c), i, "top" if i == 0 else "ranked")
    if getattr(strategy, "is_distribution", False):
        arch = _repair(strategy, cost_fn, ranked[0], budget)
        if arch is not None:
            return FinalChoice(arch, float(cost_fn([arch])[0]), -1, "repaired")
    if fallback is not None and cost_fn([fallback])[0] <= budget:
        return FinalChoice(fallback, float(cost_fn([fallback])[0]), -1, "fallback")
    raise SearchError(f"no architecture meeting the budget {budget:.6g} was found")


def _repair(strategy, cost_fn: CostFn, start: Arch, budget: float, max_iter: int = 200) -> Arch | None:
    space = strategy.space
    logp = [np.log(np.maximum(p, 1e-300)) for p in strategy.dist.probs_numpy()]
    idx = list(space.indices(start))
    cost = float(cost_fn([start])[0])
    for _ in range(max_iter):
        if cost <= budget:
            return space.from_indices(idx)
        cands, meta = [], []
        for i, d in enumerate(space.decisions):
            for j in range(len(d.choices)):
                if j != idx[i]:
                    cand = list(idx)
                    cand[i] = j
                    cands.append(space.from_indices(cand))
                    meta.append((i, j))
        ccost = cost_fn(cands)
        best, pick = None, None
        for (i, j), c in zip(meta, ccost):
            saved = cost - c
            if saved <= 0:
                continue
            if c <= budget:  # prefer a swap that lands inside the budget at least loss
                score = (0, logp[i][idx[i]] - logp[i][j])
            else:
                score = (1, (logp[i][idx[i]] - logp[i][j]) / saved)
            if best is None or score < best:
                best, pick = score, (i, j, c)
        if pick is None:
            return None
        idx[pick[0]] = pick[1]
        cost = float(pick[2])
    return space.from_indices(idx) if cost <= budget else None
