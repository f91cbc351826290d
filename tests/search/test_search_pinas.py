"""Pi-NAS-style (supervised adaptation): the two-path sampler, its consistency loss and its
path-wise EMA teacher on a real ``micro`` supernet, then the whole method in the loop on digits.

The decisive tests (``../shared/research/seed_strategies.md`` 3.8): the two paths differ in
every decision (and meet the budget); after a real training step the teacher moved by exactly
``(1 - m)(s - t)`` where the step's gradients are non-zero and is bit-identical elsewhere; the
loss equals the hand computation; a resumed run ends as an uninterrupted one.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.cost import arch_cost
from hwnas.distributed import World
from hwnas.errors import SearchError
from hwnas.nn.supernet import Supernet
from hwnas.search import SamplerContext, SearchConfig, run_search
from hwnas.search.loop_state import LoopState
from hwnas.search.outputs import read_log
from hwnas.search.pinas import PiNASSampler
from hwnas.search.train_step import supernet_step
from tests.search.test_search_greedynas import _flops
from tests.search.test_search_loop import _Kill, _micro_budget, _micro_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sampler(space, feasible=None, fallback=None, seed=0, **params) -> PiNASSampler:
    """A pinas sampler bound to a run of one warm-up and one training epoch."""
    cfg = SearchConfig(space=space.name, strategy="pinas", epochs=2, warmup_epochs=1, seed=seed)
    ctx = SamplerContext(config=cfg, space=space, strategy=None, warm_rng=np.random.default_rng(0),
                         steps_per_epoch=50, feasible=feasible, fallback=fallback)
    return PiNASSampler(**params).bind(ctx)


def _no_score(archs):
    raise AssertionError("pinas scores no candidates")


def _net_and_batch(space, seed=0, n=8):
    net = Supernet(space, 4, 16, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return net, torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_the_two_paths_differ_in_every_decision_and_meet_the_budget(micro_space):
    s = _sampler(micro_space)
    counts = [np.zeros((2, len(d.choices))) for d in micro_space.decisions]
    for b in range(1500):
        a, c = s.draw(1, b, _no_score).paths
        ia, ic = micro_space.indices(a), micro_space.indices(c)
        assert all(i != j for i, j in zip(ia, ic))  # every micro decision has > 1 choice
        for d, (i, j) in enumerate(zip(ia, ic)):
            counts[d][0, i] += 1
            counts[d][1, j] += 1
    assert s.stats == {"steps": 1500, "tries": 3000, "rejected": 0, "fallbacks": 0, "ema_steps": 0}
    for cnt in counts:  # both paths' choices are uniform (1500 / 8 or 9 each, ~11 std of ~12)
        n = cnt.shape[1]
        assert np.all(np.abs(cnt - 1500 / n) < 5 * np.sqrt(1500 / n)), cnt
    budget = _micro_budget(micro_space, 0.4)
    feasible = lambda a: arch_cost(micro_space, a).flops <= budget  # noqa: E731
    s = _sampler(micro_space, feasible=feasible)
    for b in range(200):
        a, c = s.draw(1, b, _no_score).paths
        assert feasible(a) and feasible(c)
        assert all(i != j for i, j in zip(micro_space.indices(a), micro_space.indices(c)))
    assert s.stats["tries"] == 400 + s.stats["rejected"] and s.stats["rejected"] > 0 and s.stats["fallbacks"] == 0
    # a budget only the cheapest arch meets: no second path differs from it, so it trains as both, counted
    cheapest = micro_space.from_indices([0, 0, 0])
    tight = _sampler(micro_space, feasible=lambda a: a == cheapest, fallback=cheapest, max_tries=3)
    for b in range(5):
        assert tight.draw(1, b, _no_score).paths == [cheapest, cheapest]
    assert tight.stats["fallbacks"] == 5 and tight.stats["rejected"] >= 15
    # a "budget" on decision 0 that no second path (it differs there) meets: path 1 falls back
    known = micro_space.from_indices([3, 0, 0])
    half = _sampler(micro_space, feasible=lambda a: micro_space.indices(a)[0] == 3, fallback=known, max_tries=60)
    for b in range(20):
        a, c = half.draw(1, b, _no_score).paths
        assert micro_space.indices(a)[0] == 3 and c == known
    assert half.stats["fallbacks"] == 20 and half.stats["tries"] == half.stats["rejected"] + 20
    # the state restores the future
    clone = _sampler(micro_space, seed=5, feasible=feasible)
    clone.load_state_dict(s.state_dict())
    assert clone.stats == s.stats and "teacher" not in s.state_dict()
    assert [s.draw(1, k, _no_score).paths for k in range(5)] == [clone.draw(1, k, _no_score).paths for k in range(5)]


def test_ema_moves_the_teacher_only_where_the_step_read(micro_space):
    """Two real training steps (SGD with momentum and weight decay, so the student also moves
    where the second step read nothing): the teacher moves by exactly ``(1-m)(s-t)`` where the
    step's gradient is non-zero and stays bit-identical elsewhere; its BN buffers never move."""
    net, x, y = _net_and_batch(micro_space)
    m = 0.9
    s = _sampler(micro_space, momentum=m)
    s.begin_training(net)  # the loop's hook at the end of warm-up: the teacher is copied
    assert s.train_params(net) is None  # every weight trains
    assert all(torch.equal(a, b) for a, b in zip(s.teacher.state_dict().values(), net.state_dict().values()))
    assert not any(p.requires_grad for p in s.teacher.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    loop = LoopState(SearchConfig(space="micro", strategy="pinas"), World(), micro_space, net, net, opt, None, None,
                     None, 1, 8, lambda: 0.0, lambda e: None, train_sampler=s)
    buffers = {k: v.clone() for k, v in s.teacher.named_buffers()}
    inside = outside = outside_moved = 0
    for step in range(2):
        paths = s.draw(1, step, _no_score).paths
        t0 = {k: v.clone() for k, v in s.teacher.named_parameters()}
        s_before = {k: v.detach().clone() for k, v in net.named_parameters()}
        supernet_step(loop, paths, x, y, warm=False)
        teacher = dict(s.teacher.named_parameters())
        for name, p in net.named_parameters():
            mask = torch.zeros_like(p, dtype=torch.bool) if p.grad is None else p.grad != 0
            t1, st = teacher[name], p.detach()
            assert torch.equal(t1[~mask], t0[name][~mask]), name
            assert torch.equal(t1[mask], (m * t0[name] + (1 - m) * st)[mask]), name
            assert torch.allclose(t1[mask] - t0[name][mask], (1 - m) * (st - t0[name])[mask], atol=1e-6, rtol=0)
            inside += int(mask.sum())
            outside += int((~mask).sum())
            outside_moved += int((st != s_before[name])[~mask].sum())  # momentum/decay moved the student there
    assert inside > 0 and outside > 0 and outside_moved > 0, (inside, outside, outside_moved)
    assert all(torch.equal(v, buffers[k]) for k, v in s.teacher.named_buffers())
    assert s.stats["ema_steps"] == 2
    # the teacher's state round-trips, also into a sampler whose teacher is not made yet
    later = _sampler(micro_space, momentum=m)
    later.load_state_dict(s.state_dict())
    later.attach(Supernet(micro_space, 4, 16, seed=7))
    assert all(torch.equal(a, b) for a, b in zip(later.teacher.state_dict().values(), s.teacher.state_dict().values()))


def test_loss_is_ce_plus_the_consistency_with_the_teacher_on_the_other_path(micro_space):
    net, x, y = _net_and_batch(micro_space, seed=1)
    with torch.no_grad():
        net.classifier.weight.mul_(1000.0)  # logits ~1e-3 at init: make them ~1, apart between paths
    forward = lambda a: net(x, a)  # noqa: E731
    # consistency_weight 0: exactly the default cross-entropy, no teacher needed
    s = _sampler(micro_space, consistency_weight=0.0)
    for p in s.draw(1, 0, _no_score).paths:
        assert torch.equal(s.loss(forward, y, p, xb=x), F.cross_entropy(net(x, p), y))
    for w, T in ((0.7, 1.0), (2.0, 3.0)):
        s = _sampler(micro_space, consistency_weight=w, temperature=T)
        s.attach(net)
        with torch.no_grad():  # a teacher that differs from the student
            for p in s.teacher.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        buffers = [b.clone() for b in s.teacher.buffers()]
        paths = s.draw(1, 0, _no_score).paths
        for i, p in enumerate(paths):
            other = paths[1 - i]
            net.zero_grad()
            got = s.loss(forward, y, p, xb=x)
            hand_teacher = copy.deepcopy(s.teacher).train()  # BN batch statistics, as the student
            q = F.softmax(hand_teacher(x, other) / T, 1)
            logits = net(x, p).detach()
            hand = F.cross_entropy(logits, y) - w * (q * F.log_softmax(logits / T, 1)).sum(1).mean()
            assert float(got.detach()) == pytest.approx(float(hand), rel=1e-6)
            q_same = F.softmax(hand_teacher(x, p) / T, 1)  # the teacher on this path would give another loss
            same = F.cross_entropy(logits, y) - w * (q_same * F.log_softmax(logits / T, 1)).sum(1).mean()
            assert abs(float(same) - float(hand)) > 100 * 1e-6 * float(hand)  # far outside the tolerance above
            got.backward()
            assert all(t.grad is None for t in s.teacher.parameters())
            assert any(p_.grad is not None for p_ in net.parameters())
        assert all(torch.equal(a, b) for a, b in zip(buffers, s.teacher.buffers()))  # running stats untouched
    with pytest.raises(SearchError, match="expects the paths of its last draw in order"):
        s.loss(forward, y, paths[0], xb=x)  # a third call in a step of two paths
    s = _sampler(micro_space)
    with pytest.raises(SearchError, match="no teacher"):
        s.loss(forward, y, s.draw(1, 0, _no_score).paths[0], xb=x)


@pytest.mark.parametrize("params, match", [
    ({"momentum": 1.0}, r"momentum .* must be in \[0, 1\), got 1.0"),
    ({"momentum": -0.1}, r"momentum .* must be in \[0, 1\), got -0.1"),
    ({"consistency_weight": -1}, "consistency_weight must be >= 0, got -1"),
    ({"temperature": 0}, "temperature must be > 0, got 0"),
    ({"max_tries": 0}, "max_tries .* must be an integer >= 1, got 0"),
    ({"max_tries": 2.5}, "max_tries .* must be an integer >= 1, got 2.5"),
    ({"momentum": "high"}, "momentum must be a finite number, got 'high'"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"ema": 0.9}, "bad parameters for train_sampler 'pinas'"),
])
def test_bad_pinas_settings_are_refused_by_the_config_in_one_line(params, match):
    with pytest.raises(SearchError, match=match) as e:
        SearchConfig(strategy="pinas", train_sampler_params=params)
    assert "\n" not in str(e.value)
    if "bad parameters" not in match:
        assert "Pi-NAS-style, supervised adaptation" in str(e.value)


def test_preset_and_cli_refusal_in_one_line_before_any_file(tmp_path, capsys):
    from hwnas.cli.main import main

    cfg = SearchConfig(strategy="pinas")
    assert (cfg.train_sampler, cfg.search_stage_steps) == ("pinas", 20)
    assert SearchConfig(strategy="evolution", train_sampler="pinas", search_stage_steps=2).train_sampler == "pinas"
    for args in (["--strategy", "pinas", "--search-stage-steps", "0"], ["--strategy", "pinas", "--pool-size", "4"],
                 ["--strategy", "evolution", "--train-sampler", "pinas"]):
        with pytest.raises(SystemExit) as e:
            main(["search", *args, "--out", str(tmp_path / "x")])
        assert e.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error:"), err
    assert not (tmp_path / "x").exists()


def _pinas_config(tmp_path, name, **kw):
    base = dict(strategy="pinas", epochs=3, search_stage_steps=3,
                strategy_params={"population": 6, "parents": 3, "mutations": 3, "crossovers": 3})
    return _micro_config(tmp_path, name, **{**base, **kw})


def _kill_at(epoch, batch):
    def kill(ev):
        if ev["stage"] == "train" and ev["epoch"] == epoch and ev["batch"] == batch:
            raise _Kill()
    return kill


def test_pinas_in_the_loop_meets_the_budget_and_resumes_to_the_same_result(tmp_path, micro_space, monkeypatch):
    """micro/digits under a FLOPs budget: two-path consistency training, 3 generations on the
    frozen supernet; runs killed in the first and in the second training epoch and resumed end
    exactly as an uninterrupted one."""
    calls = []
    loss = PiNASSampler.loss
    monkeypatch.setattr(PiNASSampler, "loss",
                        lambda self, fw, yb, p, *, xb=None: calls.append(str(p)) or loss(self, fw, yb, p, xb=xb))
    budget = _micro_budget(micro_space, 0.4)
    ref = run_search(_pinas_config(tmp_path, "ref", flops_budget=budget))
    assert ref.flops <= budget and ref.search_steps == 3
    recs = read_log(tmp_path / "ref" / "log.jsonl")
    assert [r["phase"] for r in recs] == ["search stage"] * 3
    ck = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)
    state = ck["train_sampler"]
    # 5 steps per epoch (160 training digits, batch 32) x 2 pinas epochs, 2 paths backpropagated each
    assert state["name"] == "pinas" and state["stats"]["steps"] == state["stats"]["ema_steps"] == 10
    assert state["stats"]["tries"] == 20 + state["stats"]["rejected"] and state["stats"]["fallbacks"] == 0
    assert len(calls) == 20 and all(c <= budget for c in _flops(micro_space, calls))
    for a, b in zip(calls[0::2], calls[1::2]):
        assert all(i != j for i, j in zip(micro_space.indices(micro_space.parse(a)),
                                          micro_space.indices(micro_space.parse(b))))
    # the sampler scores nothing: every scored arch is the evolution's 6 + (3 + 3) + (3 + 3)
    assert state["archs_scored"] == 0 and ref.archs_sampled == 18 == recs[-1]["archs_sampled"]
    teacher, net = state["teacher"], ck["supernet"]
    assert teacher.keys() == net.keys()
    assert any(not torch.equal(teacher[k], net[k]) for k in net if k.endswith("weight"))

    with pytest.raises(_Kill):  # killed in the first pinas epoch: its checkpoint is the warm-up's, no teacher
        run_search(_pinas_config(tmp_path, "a", flops_budget=budget), progress=_kill_at(1, 2))
    ck_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ck_a["epoch"] == 1 and "teacher" not in ck_a["train_sampler"]
    # the teacher's BN buffers are the warm-up supernet's: it normalises with batch statistics
    bufs = [k for k in net if "running" in k or "num_batches" in k]
    assert bufs and all(torch.equal(teacher[k], ck_a["supernet"][k]) for k in bufs)
    with pytest.raises(_Kill):  # killed in the second: the checkpoint holds the teacher
        run_search(_pinas_config(tmp_path, "b", flops_budget=budget), progress=_kill_at(2, 1))
    ck_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ck_b["epoch"] == 2 and ck_b["train_sampler"]["stats"]["ema_steps"] == 5
    ref_net = torch.load(tmp_path / "ref" / "supernet.pt", weights_only=False)
    for name in ("a", "b"):
        res = run_search(_pinas_config(tmp_path, name, flops_budget=budget, resume=True))
        assert (res.arch, res.archs_sampled, res.supernet_val_acc) == \
            (ref.arch, ref.archs_sampled, ref.supernet_val_acc), name
        assert [r["top_arch"] for r in read_log(tmp_path / name / "log.jsonl")] == [r["top_arch"] for r in recs]
        assert json.loads((tmp_path / name / "pareto.json").read_text())["front"] == \
            json.loads((tmp_path / "ref" / "pareto.json").read_text())["front"]
        res_net = torch.load(tmp_path / name / "supernet.pt", weights_only=False)
        assert all(torch.equal(ref_net[k], res_net[k]) for k in ref_net), name
        got = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["train_sampler"]
        assert got["stats"] == state["stats"] and all(torch.equal(got["teacher"][k], teacher[k]) for k in teacher)
