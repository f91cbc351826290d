"""Budgets and penalties: parsing, shaping formulas, exact expected FLOPs, budget checks,
the final choice under a budget, and the differentiable penalty actually moving mass."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hwnas.cost import arch_cost, cost_extremes
from hwnas.errors import SearchError
from hwnas.search import (Budget, budget_check, create_strategy, expected_flops_fn, flops_cost_fn, parse_flops,
                          parse_latency_ms, select_final, shape_rewards)
from hwnas.search.penalty import differentiable_penalty
from hwnas.space import get_space


@pytest.mark.parametrize("text,ms", [("2ms", 2.0), ("2.5", 2.5), ("500us", 0.5), ("0.01s", 10.0), (" 3 ms ", 3.0), (4, 4.0)])
def test_parse_latency(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text,n", [("300M", 3e8), ("1.5G", 1.5e9), ("20K", 2e4), ("20k", 2e4), ("123456", 123456)])
def test_parse_flops(text, n):
    assert parse_flops(text) == pytest.approx(n)


@pytest.mark.parametrize("bad", ["fast", "2 minutes", "-1ms", "0", ""])
def test_parse_latency_errors(bad):
    with pytest.raises(SearchError, match="latency budget"):
        parse_latency_ms(bad)


@pytest.mark.parametrize("bad", ["lots", "3X", "0M"])
def test_parse_flops_errors(bad):
    with pytest.raises(SearchError, match="FLOPs budget"):
        parse_flops(bad)


def test_hinge_is_zero_under_budget_and_linear_above():
    r = np.array([-1.0, -1.0, -1.0, -1.0])
    c = np.array([5.0, 10.0, 15.0, 20.0])
    out = shape_rewards(r, c, 10.0, "hinge", weight=2.0)
    assert out.tolist() == pytest.approx([-1.0, -1.0, -2.0, -3.0])


def test_mnas_soft_constraint():
    acc = np.array([0.9, 0.9])
    out = shape_rewards(-np.ones(2), np.array([5.0, 20.0]), 10.0, "mnas", mnas_w=-0.07, accuracy=acc)
    assert out.tolist() == pytest.approx([0.9 * 0.5 ** -0.07, 0.9 * 2.0 ** -0.07])
    assert out[0] > 0.9 > out[1]  # rewards cheap archs, penalises slow ones, smoothly


def test_shape_rewards_errors():
    with pytest.raises(SearchError, match="penalty must be one of"):
        shape_rewards([1.0], [1.0], 1.0, "quadratic")
    with pytest.raises(SearchError, match="non-finite"):
        shape_rewards([1.0], [float("nan")], 1.0, "hinge")


@pytest.mark.parametrize("space_name", ["micro", "tiny", "fbnetv2"])
def test_expected_flops_one_hot_is_exact(space_name, micro_space):
    space = get_space(space_name)
    fn = expected_flops_fn(space)
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = space.sample(rng)
        idx = space.indices(arch)
        probs = [torch.nn.functional.one_hot(torch.tensor(i), len(d.choices)).double()
                 for i, d in zip(idx, space.decisions)]
        assert float(fn(probs)) == pytest.approx(arch_cost(space, arch).flops, rel=1e-12)


def test_expected_flops_equals_enumeration(micro_space):
    """Under any product distribution, the Markov-chain formula equals brute force."""
    space = micro_space
    rng = np.random.default_rng(1)
    probs = [torch.softmax(torch.as_tensor(rng.normal(size=len(d.choices))), 0) for d in space.decisions]
    brute = 0.0
    for idx in itertools.product(*(range(len(d.choices)) for d in space.decisions)):
        p = float(np.prod([float(pr[i]) for pr, i in zip(probs, idx)]))
        brute += p * arch_cost(space, space.from_indices(idx)).flops
    assert float(expected_flops_fn(space)(probs)) == pytest.approx(brute, rel=1e-10)


def test_budget_check_flops(micro_space):
    fn = flops_cost_fn(micro_space)
    (lo, lo_arch), (hi, hi_arch) = cost_extremes(micro_space)
    with pytest.raises(SearchError, match="below the cheapest architecture") as e:
        budget_check(micro_space, Budget("flops", lo * 0.9), fn)
    assert str(lo_arch) in str(e.value)
    with pytest.warns(UserWarning, match="does not bind"):
        budget_check(micro_space, Budget("flops", hi * 1.1), fn)
    r = budget_check(micro_space, Budget("flops", (lo + hi) / 2), fn)
    assert r.min_cost == lo and r.max_cost == hi and r.exact


def test_budget_check_latency_finds_minimum(micro_space):
    """With a cost that is not FLOPs, local search still finds the exact minimum on micro."""
    space = micro_space
    weights = {d.name: np.random.default_rng(3).uniform(0.1, 1.0, len(d.choices)) for d in space.decisions}

    def lat(archs):
        return np.array([0.5 + sum(weights[d.name][i] for d, i in zip(space.decisions, space.indices(a)))
                         for a in archs])

    all_costs = lat([space.from_indices(i) for i in itertools.product(*(range(len(d.choices)) for d in space.decisions))])
    r = budget_check(space, Budget("latency", float(all_costs.mean())), lat)
    assert r.min_cost == pytest.approx(all_costs.min()) and r.max_cost == pytest.approx(all_costs.max())
    with pytest.raises(SearchError, match="below the cheapest"):
        budget_check(space, Budget("latency", float(all_costs.min()) * 0.99), lat)


def _peaked_on(strategy, arch, strength=6.0):
    rng = np.random.default_rng(0)  # small noise: no ties between archs
    with torch.no_grad():
        for p, i in zip(strategy.dist.params, strategy.space.indices(arch)):
            p.copy_(torch.as_tensor(rng.normal(size=p.numel()) * 0.5))
            p[i] = strength


@pytest.fixture(scope="module")
def micro_all(micro_space):
    """Every micro arch with its FLOPs (648 archs, computed once)."""
    space = micro_space
    archs = [space.from_indices(i) for i in itertools.product(*(range(len(d.choices)) for d in space.decisions))]
    return archs, flops_cost_fn(space)(archs)


@pytest.mark.parametrize("name,k", [("parsec", 4), ("fpnas", 4), ("parsec", 648)])
def test_select_final_meets_budget(name, k, micro_space, micro_all):
    space = micro_space
    archs, flops = micro_all
    table = dict(zip(archs, flops))

    def fn(a):
        return np.array([table[x] for x in a])

    (lo, lo_arch), (hi, hi_arch) = cost_extremes(space)
    st = create_strategy(name, space, seed=0, factorized=False) if name == "fpnas" else create_strategy(name, space)
    _peaked_on(st, hi_arch)
    budget = lo + 0.3 * (hi - lo)
    # without a budget the most likely arch is the most expensive one
    assert select_final(st, fn, None).arch == hi_arch
    choice = select_final(st, fn, budget, k=k, fallback=lo_arch)
    assert choice.cost <= budget and fn([choice.arch])[0] == choice.cost
    # the exact answer: the most likely arch of the whole space within the budget
    lps = np.array([st.log_prob(a) for a in archs])
    best_feasible = max((lp, i) for i, lp in enumerate(lps) if flops[i] <= budget)
    if k == 648:
        assert choice.how == "ranked" and choice.arch == archs[best_feasible[1]]
    else:  # top-4 are all over budget: the greedy repair is close to the optimum, far above the fallback
        assert choice.how == "repaired"
        assert st.log_prob(choice.arch) >= best_feasible[0] - 1.0
        assert st.log_prob(choice.arch) > st.log_prob(lo_arch)


def test_select_final_random_uses_rewards(micro_space):
    fn = flops_cost_fn(micro_space)
    st = create_strategy("random", micro_space, seed=0, samples_per_step=8)
    archs = st.ask()
    costs = fn(archs)
    st.tell(archs, list(costs))  # reward = cost: the best is the most expensive
    budget = float(np.median(costs))
    choice = select_final(st, fn, budget)
    assert choice.cost <= budget
    assert choice.cost == max(c for c in costs if c <= budget)


def test_differentiable_penalty_moves_mass_under_budget(micro_space):
    """With uninformative rewards, the expected-FLOPs penalty alone drives E[FLOPs] under T."""
    space = micro_space
    exp_fn = expected_flops_fn(space)
    (lo, _), (hi, _) = cost_extremes(space)
    st = create_strategy("parsec", space, seed=0, samples_per_step=4, arch_lr=0.1)
    with torch.no_grad():
        e0 = float(exp_fn(st.probs()))
    budget = lo + 0.25 * (hi - lo)
    assert e0 > budget
    penalty = differentiable_penalty(exp_fn, budget, weight=5.0)
    for _ in range(60):
        archs = st.ask()
        st.tell(archs, [0.0] * len(archs), penalty=penalty)
    with torch.no_grad():
        e1 = float(exp_fn(st.probs()))
    assert e1 < e0 and e1 <= budget * 1.05
