"""AttentiveNAS: the attentive training sampler on constructed scores and stub logits (the sampler
only sees ``score(archs)`` and ``forward(path)``), then the whole method in the loop on digits.

The decisive tests (``../shared/research/seed_strategies.md`` 3.4): the sandwich always holds
the max and min paths of ``cost_extremes``; the attentive paths fall in their sampled FLOPs
bucket; BestUp / WorstUp pick the lowest / highest loss candidate; the distillation loss equals
the hand computation and sends no gradient into the teacher's logits; a resumed run ends as an
uninterrupted one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.cost import cost_extremes
from hwnas.errors import SearchError
from hwnas.search import SamplerContext, SearchConfig, run_search
from hwnas.search.attentivenas import AttentiveSampler, soft_cross_entropy
from hwnas.search.outputs import read_log
from hwnas.space import get_space
from tests.search.test_search_greedynas import Recorder, _flops
from tests.search.test_search_loop import _Kill, _micro_budget, _micro_config


def _sampler(space, seed=0, **params) -> AttentiveSampler:
    """An attentive sampler bound to a run of one warm-up and one training epoch."""
    cfg = SearchConfig(space=space.name, strategy="attentivenas", epochs=2, warmup_epochs=1, seed=seed)
    ctx = SamplerContext(config=cfg, space=space, strategy=None, warm_rng=np.random.default_rng(0),
                         steps_per_epoch=50)
    return AttentiveSampler(**params).bind(ctx)


def test_sandwich_always_holds_the_max_and_min_paths(micro_space):
    (_, lo), (_, hi) = cost_extremes(micro_space, "flops")
    for n in (1, 2):
        s = _sampler(micro_space, attentive_paths=n)
        assert (s.max_arch, s.min_arch) == (hi, lo)
        for b in range(20):
            paths = s.draw(1, b, Recorder()).paths
            assert len(paths) == n + 2 and paths[0] == hi and paths[-1] == lo
        assert s.archs_scored == 20 * n * 3 and s.stats["steps"] == 20


def test_attentive_candidates_fall_in_their_sampled_flops_bucket():
    tiny = get_space("tiny")
    s = _sampler(tiny, candidates=3)
    score = Recorder()
    width = (s.hi - s.lo) / s.buckets
    hits = total = 0
    for b in range(100):
        s.draw(1, b, score)
        (tau,) = s.last_targets
        for a in score.calls[-1]:  # every scored candidate was drawn for this step's target
            total += 1
            f = s.flops(tiny.parse(a))
            hits += s.lo + tau * width <= f < s.lo + (tau + 1) * width
    assert total == 300 and hits >= 0.9 * total and total - hits == s.stats["off_target"]
    # the targets follow the table's FLOPs histogram: the bucket of the median uniform arch is drawn
    assert s.target_p.sum() == pytest.approx(1.0) and s.target_p[s.bucket(tiny.sample(0))] > 0


@pytest.mark.parametrize("pick, best", [("bestup", True), ("worstup", False)])
def test_bestup_and_worstup_pick_the_lowest_and_highest_loss_candidate(micro_space, pick, best):
    s = _sampler(micro_space, pick=pick, candidates=5)
    score = Recorder(seed=3)  # scores are -loss: the highest score is the lowest loss
    for b in range(30):
        trained = s.draw(1, b, score).paths[1]
        cands = score.calls[-1]
        assert len(cands) == 5
        vals = [score.table[a] for a in cands]
        want = cands[int(np.argmax(vals) if best else np.argmin(vals))]
        assert str(trained) == want


def test_uniform_pick_is_the_bignas_sandwich_unscored_and_uniform(micro_space):
    """``pick='uniform'`` (the ablation's baseline): the middle path is a uniform arch, nothing
    is scored; over many draws every choice of every decision appears about equally often."""
    s = _sampler(micro_space, pick="uniform", attentive_paths=1)
    score = Recorder()
    mids = [s.draw(1, b, score).paths[1] for b in range(600)]
    assert not score.calls and s.archs_scored == 0
    for i, d in enumerate(micro_space.decisions):
        counts = np.bincount([micro_space.indices(a)[i] for a in mids], minlength=len(d.choices))
        expected = 600 / len(d.choices)
        assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), (d.name, counts)


def test_distillation_loss_equals_the_hand_computation(micro_space):
    s = _sampler(micro_space, attentive_paths=1, label_smoothing=0.1)
    paths = s.draw(1, 0, Recorder()).paths
    g = torch.Generator().manual_seed(0)
    logits = {str(p): torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True) for p in paths}
    yb = torch.tensor([0, 1, 2, 3, 0, 1])

    def forward(a):
        return logits[str(a)] * 1.0  # a fresh node, as a supernet forward is

    teacher = s.loss(forward, yb, paths[0])
    lp = F.log_softmax(logits[str(paths[0])].detach(), 1)
    hand = (-(0.9 * lp[torch.arange(6), yb]) - 0.1 * lp.mean(1)).mean()  # label smoothing 0.1 over 4 classes
    assert float(teacher.detach()) == pytest.approx(float(hand), abs=1e-12)
    q = F.softmax(logits[str(paths[0])].detach(), 1)
    for p in paths[1:]:
        student = s.loss(forward, yb, p)
        ls = F.log_softmax(logits[str(p)].detach(), 1)
        hand = -(q * ls).sum(1).mean()
        kl = (q * (q.log() - ls)).sum(1).mean()
        entropy = -(q * q.log()).sum(1).mean()
        assert float(student.detach()) == pytest.approx(float(hand), abs=1e-12)
        assert float(student.detach()) == pytest.approx(float(kl + entropy), abs=1e-12)  # KL + H(teacher)
        assert float(student.detach()) == pytest.approx(float(F.cross_entropy(logits[str(p)].detach(), q)), abs=1e-12)
        student.backward()
        assert logits[str(paths[0])].grad is None  # the teacher's logits are detached targets
        assert logits[str(p)].grad is not None
    with pytest.raises(SearchError, match="expects the paths of its last draw in order"):
        s.loss(forward, yb, paths[0])  # a fourth call in a step of three paths
    # without distillation every path learns from the labels
    s = _sampler(micro_space, distill=False, label_smoothing=0.0)
    paths = s.draw(1, 0, Recorder()).paths
    logits = {str(p): torch.randn(6, 4, generator=g, dtype=torch.float64) for p in paths}
    for p in paths:
        assert float(s.loss(forward, yb, p)) == pytest.approx(float(F.cross_entropy(logits[str(p)], yb)), abs=1e-12)
    assert float(soft_cross_entropy(logits[str(paths[1])], F.one_hot(yb, 4).double())) == \
        pytest.approx(float(F.cross_entropy(logits[str(paths[1])], yb)), abs=1e-12)


def test_state_round_trip_restores_the_future(micro_space):
    a = _sampler(micro_space, seed=1)
    score = Recorder()
    for b in range(7):
        a.draw(1, b, score)
    b = _sampler(micro_space, seed=1)
    b.load_state_dict(a.state_dict())
    assert b.stats == a.stats and b.archs_scored == a.archs_scored
    assert [a.draw(1, k, score).paths for k in range(5)] == [b.draw(1, k, score).paths for k in range(5)]
    with pytest.raises(SearchError, match="is for 'greedy'"):
        b.load_state_dict({**a.state_dict(), "name": "greedy"})


@pytest.mark.parametrize("params, match", [
    ({"pick": "best"}, "pick must be one of bestup, worstup, uniform, got 'best'"),
    ({"candidates": 0}, "candidates .* must be >= 1, got 0"),
    ({"attentive_paths": -1}, "attentive_paths .* must be >= 0, got -1"),
    ({"buckets": 0}, "buckets .* must be >= 1, got 0"),
    ({"table_size": 0}, "table_size .* must be >= 1, got 0"),
    ({"distill": "yes"}, "distill must be true or false"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
    ({"num_trials": 3}, "bad parameters for train_sampler 'attentive'"),
])
def test_bad_attentive_settings_are_refused_by_the_config(params, match):
    with pytest.raises(SearchError, match=match):
        SearchConfig(strategy="attentivenas", train_sampler_params=params)


def test_preset_and_cli_refusal_in_one_line_before_any_file(tmp_path, capsys):
    from hwnas.cli.main import main

    cfg = SearchConfig(strategy="attentivenas")
    assert (cfg.train_sampler, cfg.search_stage_steps) == ("attentive", 20)
    assert SearchConfig(strategy="evolution", train_sampler="attentive", search_stage_steps=2).train_sampler == \
        "attentive"
    with pytest.raises(SystemExit) as e:
        main(["search", "--strategy", "attentivenas", "--search-stage-steps", "0", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "search_stage_steps > 0" in err[0], err
    assert not (tmp_path / "x").exists()


def _attentive_config(tmp_path, name, **kw):
    base = dict(strategy="attentivenas", epochs=3, search_stage_steps=3,
                train_sampler_params={"candidates": 2, "table_size": 300, "buckets": 10},
                strategy_params={"population": 6, "parents": 3, "mutations": 3, "crossovers": 3})
    return _micro_config(tmp_path, name, **{**base, **kw})


def test_attentivenas_in_the_loop_meets_the_budget_and_resumes_to_the_same_result(tmp_path, micro_space,
                                                                                    monkeypatch):
    """micro/digits under a FLOPs budget: attentive training (3 paths a batch), 3 generations on
    the frozen supernet; a run killed in the middle of its training and resumed ends exactly as
    an uninterrupted one."""
    calls = []
    loss = AttentiveSampler.loss
    monkeypatch.setattr(AttentiveSampler, "loss",
                        lambda self, fw, yb, p, *, xb=None: calls.append(str(p)) or loss(self, fw, yb, p, xb=xb))
    budget = _micro_budget(micro_space, 0.4)
    ref = run_search(_attentive_config(tmp_path, "ref", flops_budget=budget))
    assert ref.flops <= budget and ref.search_steps == 3
    recs = read_log(tmp_path / "ref" / "log.jsonl")
    assert [r["phase"] for r in recs] == ["search stage"] * 3
    state = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)["train_sampler"]
    # 5 steps per epoch (160 training digits, batch 32) x 2 attentive epochs, 3 paths backpropagated each
    assert state["name"] == "attentive" and state["stats"]["steps"] == 10 and state["archs_scored"] == 10 * 2
    (_, lo), (_, hi) = cost_extremes(micro_space, "flops")
    assert len(calls) == 30 and calls[0::3] == [str(hi)] * 10 and calls[2::3] == [str(lo)] * 10
    # every scored arch is counted: the sampler's candidates, then the evolution's 6 + (3 + 3) + (3 + 3)
    assert ref.archs_sampled == state["archs_scored"] + 18 == recs[-1]["archs_sampled"]

    def kill(ev):
        if ev["stage"] == "train" and ev["epoch"] == 2 and ev["batch"] == 1:
            raise _Kill()

    with pytest.raises(_Kill):
        run_search(_attentive_config(tmp_path, "b", flops_budget=budget), progress=kill)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 2
    res = run_search(_attentive_config(tmp_path, "b", flops_budget=budget, resume=True))
    assert (res.arch, res.archs_sampled, res.supernet_val_acc) == (ref.arch, ref.archs_sampled, ref.supernet_val_acc)
    assert [r["top_arch"] for r in read_log(tmp_path / "b" / "log.jsonl")] == [r["top_arch"] for r in recs]
    assert json.loads((tmp_path / "b" / "pareto.json").read_text())["front"] == \
        json.loads((tmp_path / "ref" / "pareto.json").read_text())["front"]
    ref_net = torch.load(tmp_path / "ref" / "supernet.pt", weights_only=False)
    res_net = torch.load(tmp_path / "b" / "supernet.pt", weights_only=False)
    assert all(torch.equal(ref_net[k], res_net[k]) for k in ref_net)


def test_attentivenas_under_a_latency_budget(tmp_path, micro_space, micro_predictor, micro_latency_budget):
    path, p = micro_predictor
    budget = micro_latency_budget
    res = run_search(_attentive_config(tmp_path, "lat", epochs=2, latency_budget_ms=budget, predictor=str(path),
                                       force=True))
    assert res.predicted_latency_ms <= budget
    assert _flops(micro_space, [res.arch])[0] == res.flops
