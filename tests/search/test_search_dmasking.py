"""DMaskingNAS (FBNetV2): the strategy's gates, its gradient step, the temperature schedule, and
the whole method in the loop on digits (``micro`` space).

The decisive test of the relaxed forward (one-hot gates equal the single path bit for bit) lives
in ``tests/nn/test_relaxed.py``; here: gradients reach every dimension's logits without NaN at a
hot and a cold temperature, the architecture step never touches the supernet's weights, a strong
FLOPs penalty drives the distribution to the space's cheapest arch and a reward for FLOPs to
the most expensive, and a run killed mid-way resumes to the same result.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hwnas.cost import cost_extremes
from hwnas.errors import SearchError
from hwnas.nn.relaxed import gate_dims
from hwnas.nn.supernet import Supernet
from hwnas.search import SearchConfig, create_strategy, expected_flops_fn, run_search
from hwnas.search.dmasking import TAU0, TAU_END
from hwnas.search.outputs import read_log
from hwnas.space import get_space
from hwnas.space._plan import make_divisible
from tests.search.test_search_loop import _Kill, _micro_budget, _micro_config


def _grads(st, loss):
    """The logits' gradients of one ``relaxed_update`` (the Adam step is skipped)."""
    step = st.optimizer.step
    st.optimizer.step = lambda: None
    try:
        st.relaxed_update(loss)
    finally:
        st.optimizer.step = step
    return [p.grad.detach().clone() for p in st.dist.params]


@pytest.mark.parametrize("tau", [5.0, 0.1])
def test_gradients_reach_every_dimension_and_never_the_weights(micro_space, tau):
    torch.manual_seed(0)
    st = create_strategy("dmasking", micro_space, seed=0, tau0=tau, tau_end=tau)
    net = Supernet(micro_space, 10, seed=0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with net.batch_stats():
        loss = torch.nn.functional.cross_entropy(net.forward_relaxed(x, st.sample_gates(requires_grad=True)), y)
    grads = iter(_grads(st, loss))
    for layer, dims in zip(micro_space.layers, gate_dims(micro_space)):
        for name, values in dims.items():
            g = next(grads)
            assert torch.isfinite(g).all()
            # a dimension with one value carries no choice, nor a width whose values round to the
            # same channel count (micro's first layer: 0.5 and 1.0 of 8 channels are both 8)
            moot = len(values) == 1 or (name == "width" and
                                        len({make_divisible(layer.channels * v) for v in values}) == 1)
            assert (float(g.abs().sum()) == 0) == moot, (layer, name)
    assert all(w.grad is None for w in net.parameters())  # the architecture step leaves the weights alone


def test_weight_gates_are_constants_and_the_generator_resumes(micro_space):
    a = create_strategy("dmasking", micro_space, seed=3)
    gates = a.sample_gates(requires_grad=False)
    assert all(not t.requires_grad for g in gates for t in g.values())
    b = create_strategy("dmasking", micro_space, seed=99)
    b.load_state_dict(a.state_dict())
    for ga, gb in zip(a.sample_gates(requires_grad=True), b.sample_gates(requires_grad=True)):
        assert all(torch.equal(ga[k].detach(), gb[k].detach()) for k in ga)


def test_temperature_anneals_from_tau0_to_tau_end_over_the_run(micro_space):
    st = create_strategy("dmasking", micro_space, total_steps=10)
    assert st.temperature() == TAU0
    assert TAU_END == pytest.approx(5.0 * math.exp(-0.045 * 80))  # FBNet v1: 80 search epochs
    taus = []
    for _ in range(12):
        taus.append(st.temperature())
        st.record(st.dist.argmax(), 0.0)
    assert taus[5] == pytest.approx(math.sqrt(TAU0 * TAU_END))  # geometric: halfway in log
    assert taus[10] == taus[11] == pytest.approx(TAU_END)
    assert all(a > b for a, b in zip(taus[:10], taus[1:11]))
    assert st.archs_sampled == 12  # every recorded arch counts


@pytest.mark.parametrize("sign,which", [(1.0, 0), (-1.0, 1)])
def test_a_flops_cost_drives_the_distribution_to_the_cheapest_or_the_largest_arch(micro_space, sign, which):
    """With only the (exact, differentiable) expected FLOPs in the loss the argmax becomes the
    space's cheapest arch; with the negated cost, the most expensive (FBNetV2's masks with a
    strong penalty pick the smallest widths, with none the widest: brief 3.7 test 4)."""
    expected = expected_flops_fn(micro_space, None, 10)
    (lo, lo_arch), (hi, hi_arch) = cost_extremes(micro_space)
    st = create_strategy("dmasking", micro_space, seed=0, arch_lr=0.1)
    for _ in range(300):
        st.relaxed_update(sign * expected(st.probs()) / hi)
    assert st.dist.argmax() == (lo_arch, hi_arch)[which]
    assert st.entropy() < 0.2 * create_strategy("dmasking", micro_space).entropy()


@pytest.mark.parametrize("kw,match", [
    (dict(penalty="hinge"), "--penalty differentiable"),
    (dict(train_sampler="uniform", search_stage_steps=2), "do not go together"),
    (dict(search_stage_steps=2), "no search stage"),
    (dict(private_bn=("project",)), "private_bn off"),
])
def test_bad_combinations_are_refused_before_training(tmp_path, micro_space, kw, match):
    cfg = dict(flops_budget=_micro_budget(micro_space))
    with pytest.raises(SearchError, match=match):
        run_search(_micro_config(tmp_path, "bad", strategy="dmasking", **{**cfg, **kw}))
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_bad_strategy_settings_and_spaces_are_refused():
    with pytest.raises(SearchError, match="do not go together"):
        SearchConfig(strategy="fpnas", train_sampler="relaxed")
    with pytest.raises(SearchError, match="relaxed forward can run: .*lists its ops jointly"):
        create_strategy("dmasking", get_space("fbnet"))
    with pytest.raises(SearchError, match="tau_end <= tau0"):
        create_strategy("dmasking", get_space("tiny"), tau0=1.0, tau_end=2.0)
    with pytest.raises(SearchError, match="arch_lr must be a positive number"):
        create_strategy("dmasking", get_space("tiny"), arch_lr=0)


def test_cli_refuses_hinge_with_a_budget_in_one_line(tmp_path, capsys):
    from hwnas.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--strategy", "dmasking", "--penalty", "hinge", "--flops-budget", "3M",
              "--out", str(tmp_path / "x"), "--limit", "100"])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--penalty differentiable" in err[0], err


def _dm_config(tmp_path, name, **kw):
    return _micro_config(tmp_path, name, strategy="dmasking", **kw)


def test_dmasking_in_the_loop_meets_the_budget_and_resumes_to_the_same_result(tmp_path, micro_space):
    """micro/digits under a FLOPs budget: the preset (relaxed sampler, differentiable penalty),
    one relaxed step per training batch, the final arch within the budget; a run killed in its
    last epoch and resumed ends exactly as an uninterrupted one."""
    budget = _micro_budget(micro_space, 0.3)
    cfg = _dm_config(tmp_path, "ref", flops_budget=budget)
    assert (cfg.train_sampler, cfg.penalty, cfg.search_stage_steps) == ("relaxed", "differentiable", 0)
    ref = run_search(cfg)
    assert ref.flops <= budget and ref.penalty == "differentiable"
    recs = read_log(tmp_path / "ref" / "log.jsonl")
    assert len(recs) == ref.search_steps == 2 * 5  # 5 batches (160 digits, batch 32) x 2 search epochs
    assert {r["phase"] for r in recs} == {"relaxed"} and all(r["k"] == 1 for r in recs)
    assert recs[0]["temperature"] == TAU0 and recs[-1]["temperature"] < recs[0]["temperature"]
    assert recs[-1]["entropy"] < recs[0]["entropy"]
    assert ref.archs_sampled == ref.search_steps == recs[-1]["archs_sampled"]  # the argmax scored per step
    assert all(np.isfinite(r["relaxed_loss"]) for r in recs)
    assert json.loads((tmp_path / "ref" / "pareto.json").read_text())["front"]

    def kill(ev):
        if ev["stage"] == "search" and ev["epoch"] == 2 and ev["batch"] == 1:
            raise _Kill()

    with pytest.raises(_Kill):
        run_search(_dm_config(tmp_path, "b", flops_budget=budget), progress=kill)
    res = run_search(_dm_config(tmp_path, "b", flops_budget=budget, resume=True))
    assert (res.arch, res.archs_sampled, res.supernet_val_acc, res.entropy) == \
        (ref.arch, ref.archs_sampled, ref.supernet_val_acc, ref.entropy)
    assert read_log(tmp_path / "b" / "log.jsonl") == [dict(r, time_s=b["time_s"]) for r, b in
                                                      zip(recs, read_log(tmp_path / "b" / "log.jsonl"))]


def test_dmasking_under_a_latency_budget(tmp_path, micro_space, micro_predictor, micro_latency_budget):
    path, _ = micro_predictor
    res = run_search(_dm_config(tmp_path, "lat", epochs=2, latency_budget_ms=micro_latency_budget,
                                predictor=str(path), force=True))
    assert res.predicted_latency_ms <= micro_latency_budget
    recs = read_log(tmp_path / "lat" / "log.jsonl")
    assert all(r["expected_latency_ms"] is not None for r in recs)
