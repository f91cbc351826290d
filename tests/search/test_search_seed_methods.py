"""The seed papers' rule-based strategies: DDPNAS's pruning, MdeNAS's update, SPOS-style evolution."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import SearchError
from hwnas.search import create_strategy, read_log, run_search
from hwnas.search.mdenas import mdl_delta, repair
from tests.search.test_search_loop import _micro_budget, _micro_config


def test_ddpnas_prunes_the_worst_choice_first_and_ends_with_the_best(micro_space):
    """Reward depends on decision 0 only, increasing in its index: after exactly
    ``3 * sum_{n=2}^{C} n`` asks (C = 9 on micro: 132) every decision has one choice left,
    decision 0's is its best, and its prunes removed choices in ascending order."""
    st = create_strategy("ddpnas", micro_space, seed=0, samples_per_step=1, temperature=0.01)
    c_max = max(len(d.choices) for d in micro_space.decisions)
    needed = 3 * sum(range(2, c_max + 1))
    asks = 0
    while not st.converged:
        archs = st.ask()
        st.tell(archs, [micro_space.indices(a)[0] / 10 for a in archs])  # "accuracy" of decision 0's choice
        asks += 1
        assert asks <= needed, "did not converge in 3 * sum(2..C) asks"
        assert all(a.sum() >= 1 for a in st.alive)  # never the last choice of a decision
    assert asks == needed
    assert st.entropy() == pytest.approx(0.0, abs=1e-9) and np.isfinite(st.log_prob(st.best()))
    n0 = len(micro_space.decisions[0].choices)
    assert micro_space.indices(st.best())[0] == n0 - 1
    first = [p[0] for p in st.prunes if p[0] is not None]
    assert first == list(range(n0 - 1))
    assert len(set(st.ask(4))) == 1  # converged: one arch left
    # pruned choices have probability exactly 0, and the state round trip keeps everything
    clone = create_strategy("ddpnas", micro_space, seed=5)
    clone.load_state_dict(st.state_dict())
    assert clone.best() == st.best() and clone.prunes == st.prunes


def test_mdenas_update_by_hand():
    """The brief's example: H^e = [1, 2, 3], H^a = [0.9, 0.5, 0.7] -> Delta = [+2, -1, -1]."""
    delta = mdl_delta(np.array([1.0, 2.0, 3.0]), np.array([0.9, 0.5, 0.7]), np.ones(3, dtype=bool))
    np.testing.assert_array_equal(delta, [2, -1, -1])
    p = repair(np.full(3, 1 / 3) + 0.01 * delta)
    np.testing.assert_allclose(p, [1 / 3 + 0.02, 1 / 3 - 0.01, 1 / 3 - 0.01])
    # a choice never told takes part in no comparison
    np.testing.assert_array_equal(mdl_delta(np.array([0.0, 2.0, 1.0]), np.array([0.0, 0.1, 0.9]),
                                            np.array([False, True, True])), [0, -1, 1])


def test_mdenas_keeps_a_distribution(micro_space):
    rng = np.random.default_rng(0)
    st = create_strategy("mdenas", micro_space, seed=0, samples_per_step=2)
    for _ in range(60):
        archs = st.ask()
        st.tell(archs, rng.random(len(archs)))
        for t in st.table:
            assert t.sum() == pytest.approx(1.0) and (t >= 0).all()
    rep = repair(np.array([0.5, -0.1, 0.6]))
    assert rep.min() == 0 and rep.sum() == pytest.approx(1.0)


def test_evolution_generations_respect_feasibility_and_do_not_repeat(micro_space):
    st = create_strategy("evolution", micro_space, seed=0, samples_per_step=12, parents=4, mutations=6, crossovers=6)
    st.feasible = lambda a: micro_space.indices(a)[0] < 4  # a "budget" on decision 0
    seen = set()
    for gen in range(6):
        archs = st.ask()
        assert len(archs) == (12 if gen == 0 else 12)
        assert all(micro_space.indices(a)[0] < 4 for a in archs)
        assert not seen & {str(a) for a in archs} and len(set(archs)) == len(archs)
        seen |= {str(a) for a in archs}
        st.tell(archs, [float(-sum(micro_space.indices(a))) for a in archs])
    best = st.best()
    assert sum(micro_space.indices(best)) <= 2  # the all-zero arch scores best; the EA gets close
    with pytest.raises(SearchError, match="m_prob"):
        create_strategy("evolution", micro_space, m_prob=0)


def test_rule_based_tables_refuse_gradient_penalties(tmp_path, micro_space):
    budget = _micro_budget(micro_space, 0.4)
    for name in ("ddpnas", "mdenas"):
        with pytest.raises(SearchError, match="acts on a distribution's gradient"):
            run_search(_micro_config(tmp_path, f"{name}_diff", strategy=name, flops_budget=budget,
                                     penalty="differentiable"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddpnas", "mdenas", "evolution"])
def test_seed_methods_run_in_the_loop_under_a_budget(tmp_path, micro_space, name):
    budget = _micro_budget(micro_space, 0.4)
    res = run_search(_micro_config(tmp_path, name, strategy=name, flops_budget=budget, epochs=3,
                                   samples_per_step=4 if name != "evolution" else 6))
    assert res.flops <= budget and res.archs_sampled >= res.search_steps
    cfg = _micro_config(tmp_path, name + "_cfg", strategy=name)
    assert cfg.reward_kind == ("acc" if name in ("ddpnas", "mdenas") else "loss")


def test_two_stage_spos_evolution_on_a_frozen_supernet(tmp_path, micro_space):
    """Uniform single-path training, then 4 generations of evolution on the frozen supernet:
    the supernet's weights do not move in the search stage, and the pick meets the budget."""
    import torch

    budget = _micro_budget(micro_space, 0.4)
    cfg = _micro_config(tmp_path, "spos", strategy="evolution", flops_budget=budget, epochs=2, samples_per_step=6,
                        train_sampler="uniform", search_stage_steps=4,
                        strategy_params={"parents": 3, "mutations": 3, "crossovers": 3})
    res = run_search(cfg)
    recs = read_log(tmp_path / "spos" / "log.jsonl")
    assert [r["phase"] for r in recs] == ["search stage"] * 4 and res.search_steps == 4
    assert res.archs_sampled == 6 + 3 * 6 and res.flops <= budget
    ck = torch.load(tmp_path / "spos" / "checkpoint.pt", weights_only=False)["supernet"]
    final = torch.load(tmp_path / "spos" / "supernet.pt", weights_only=False)
    assert all(torch.equal(ck[k], final[k]) for k in ck)  # the search stage only evaluates
    with pytest.raises(SearchError, match="give search_stage_steps > 0"):
        _micro_config(tmp_path, "x", strategy="evolution", train_sampler="uniform")
