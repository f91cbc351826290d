"""The class curriculum (``curriculum.py``, E9) and the DA-NAS-style ``danas`` strategy.

Curriculum checks spy on the real calls of a run (``supernet_step``, ``LoopState.evaluate``),
pruning checks drive the strategy by ask/tell, and the loop smoke runs danas on micro/digits
with the schedule 3 -> 6 -> 10 under a FLOPs budget, killed and resumed.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.errors import SearchError
from hwnas.search import SearchConfig, create_strategy, run_search
from hwnas.search import epoch as epoch_mod
from hwnas.search import loop as loop_mod
from hwnas.search.curriculum import (MASKED_LOGIT, Curriculum, class_order, masked_logits,
                                     stage_end_steps, stage_lengths)
from hwnas.search.loop_state import LoopState
from hwnas.search.outputs import read_log
from hwnas.search.table import FLOOR
from tests.cli_exit import cli_exit_code
from tests.search.test_search_loop import _Kill, _micro_budget, _micro_config

SCHEDULE = (3, 6, 10)


# -- the stage rule and the easy-first order ---------------------------------------------------------
def test_stages_split_the_search_epochs_evenly_earlier_stages_shorter():
    assert stage_lengths(3, 3) == [1, 1, 1]
    assert stage_lengths(7, 3) == [2, 2, 3] and stage_lengths(8, 3) == [2, 3, 3]
    assert stage_lengths(5, 1) == [5]
    cfg = SearchConfig(epochs=8, warmup_epochs=1, class_schedule=SCHEDULE)
    assert stage_end_steps(cfg, 5) == (10, 20)  # stages of 2, 2, 3 epochs; the last one's end is not a prune
    assert stage_end_steps(SearchConfig(epochs=4), 5) == ()
    cur = Curriculum(SCHEDULE, 10, warmup_epochs=1, search_epochs=7, order=list(range(9, -1, -1)))
    assert [cur.stage_of(e) for e in range(9)] == [None, 0, 0, 1, 1, 2, 2, 2, 2]  # epoch 8: past the run, last
    assert cur.active(0) is None and cur.active(1) == [7, 8, 9] and cur.active(3) == [4, 5, 6, 7, 8, 9]
    assert cur.active(5) is None  # every class: no filter, no mask


class _FakeNet(torch.nn.Module):
    """Right on class c with probability ``hit[c]`` (the image's first pixel carries the label)."""

    def __init__(self, hit, num_classes):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.hit, self.c = hit, num_classes

    def batch_stats(self):
        import contextlib

        return contextlib.nullcontext()

    def forward(self, x, arch=None):
        y = x[:, 0].long()
        right = x[:, 1] < torch.as_tensor(self.hit, dtype=x.dtype)[y]
        pred = torch.where(right, y, (y + 1) % self.c)
        return F.one_hot(pred, self.c).to(x.dtype)


def test_class_order_is_easy_first_ties_by_class_index(micro_space):
    c, per = 5, 20
    y = torch.arange(c).repeat_interleave(per)
    u = torch.arange(per, dtype=torch.float32).repeat(c) / per  # 0, 0.05, ... per class
    x = torch.stack([y.float(), u], 1)
    hit = [0.5, 1.0, 0.25, 1.0, 0.5]  # accuracies: class 1 and 3 tie at 1.0, 0 and 4 at 0.5
    order = class_order(_FakeNet(hit, c), micro_space, (x, y), c, batch_size=16, seed=0)
    assert order == [1, 3, 0, 4, 2]


# -- logits and loss ------------------------------------------------------------------------------------
def test_masked_loss_is_cross_entropy_over_the_active_logits_only():
    torch.manual_seed(0)
    logits = torch.randn(6, 10, dtype=torch.float64) * 3
    active = [1, 4, 7]
    y = torch.tensor([1, 4, 7, 7, 4, 1])
    masked = masked_logits(logits, active)
    assert torch.equal(masked[:, [0, 2, 3, 5, 6, 8, 9]], torch.full((6, 7), MASKED_LOGIT, dtype=torch.float64))
    by_hand = np.mean([-(logits[i, y[i]] - math.log(sum(math.exp(logits[i, c]) for c in active))).item()
                       for i in range(6)])
    assert float(F.cross_entropy(masked, y)) == pytest.approx(by_hand, abs=1e-12)
    remap = torch.tensor([active.index(int(v)) for v in y])
    assert float(F.cross_entropy(masked, y)) == pytest.approx(float(F.cross_entropy(logits[:, active], remap)),
                                                              abs=1e-12)
    assert set(masked.argmax(1).tolist()) <= set(active)  # accuracy is over the active classes too
    g = torch.autograd.grad(F.cross_entropy(masked_logits(logits.requires_grad_(), active), y), logits)[0]
    assert torch.all(g[:, [0, 2, 3, 5, 6, 8, 9]] == 0)  # nothing flows to the inactive classes


# -- the curriculum in the loop (any strategy) ------------------------------------------------------------
def _spy(monkeypatch):
    """Record, per epoch, the labels of every real supernet step and of every real ``evaluate``,
    and (inside the loop) whether the supernet's inactive logits come out masked."""
    seen = {"epoch": None, "train": {}, "val": {}, "sizes": {}, "masked": {}}
    real_epoch, real_step, real_eval = loop_mod.search_epoch, epoch_mod.supernet_step, LoopState.evaluate

    def search_epoch(loop, warm_sampler, epoch, step):
        seen["epoch"] = epoch
        return real_epoch(loop, warm_sampler, epoch, step)

    def supernet_step(loop, paths, xb, yb, warm, sync_bn=False):
        seen["train"].setdefault(seen["epoch"], set()).update(yb.tolist())
        seen["sizes"].setdefault(seen["epoch"], []).append(len(yb))
        return real_step(loop, paths, xb, yb, warm, sync_bn=sync_bn)

    def evaluate(self, archs, x, y, batch_size):
        e = seen["epoch"]
        seen["val"].setdefault(e, []).append(set(y.tolist()))
        with torch.no_grad():
            out = self.net(x[:4], archs[0])
        seen["masked"].setdefault(e, []).append(tuple(int(c) for c in torch.nonzero(out[0] != MASKED_LOGIT)))
        return real_eval(self, archs, x, y, batch_size)

    monkeypatch.setattr(loop_mod, "search_epoch", search_epoch)
    monkeypatch.setattr(epoch_mod, "supernet_step", supernet_step)
    monkeypatch.setattr(LoopState, "evaluate", evaluate)
    return seen


@pytest.mark.parametrize("strategy", ["fpnas", "greedynas"])
def test_trained_and_scored_batches_hold_exactly_the_scheduled_classes(tmp_path, micro_space, monkeypatch, strategy):
    """fpnas (the strategy's steps score) and greedynas (its sampler scores candidates itself):
    epoch 0 warm-up on every class, then 3, 6 and 10 classes, easiest first."""
    seen = _spy(monkeypatch)
    extra = {} if strategy == "fpnas" else dict(
        search_stage_steps=2, train_sampler_params={"pool_size": 8, "candidates": 4, "keep_top": 2},
        strategy_params={"population": 4, "parents": 2, "mutations": 2, "crossovers": 2})
    run_search(_micro_config(tmp_path, strategy=strategy, epochs=4, class_schedule=SCHEDULE, **extra))
    order = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["curriculum"]["order"]
    assert sorted(order) == list(range(10))
    active = {0: set(range(10)), 1: set(order[:3]), 2: set(order[:6]), 3: set(range(10))}
    for e, classes in active.items():
        assert seen["train"][e] == classes, e  # exactly the scheduled classes were trained on
        if e == 0:
            assert 0 not in seen["val"]  # warm-up scores nothing
            continue
        assert all(v <= classes for v in seen["val"][e]) and set().union(*seen["val"][e]) == classes, e
        want = tuple(sorted(classes))
        assert all(m == want for m in seen["masked"][e]), e  # every other logit is masked inside the epoch
    # 160 training digits, batch 32: the steps stay 5 an epoch, the batches shrink to the active classes
    assert [len(seen["sizes"][e]) for e in range(4)] == [5, 5, 5, 5]
    assert sum(seen["sizes"][1]) < 0.45 * 160 and sum(seen["sizes"][3]) == 160
    # after the loop (search stage, final arch, Pareto front): every class, nothing masked
    assert seen["masked"][3][-1] == tuple(range(10)) and set().union(*seen["val"][3]) == set(range(10))


def test_a_step_whose_batch_has_no_active_image_skips_training_but_not_the_strategy(tmp_path, micro_space,
                                                                                     monkeypatch):
    """Batches of 4 digits, 2 active classes of 10 in the first search epoch: many batches hold
    none of them; their supernet step is skipped, their strategy step (12 a epoch) is not."""
    seen = _spy(monkeypatch)
    cfg = _micro_config(tmp_path, strategy="parsec", limit=60, batch_size=4, val_batch_size=8, epochs=3,
                        class_schedule=(2, 10))
    res = run_search(cfg)
    assert res.search_steps == 2 * 12
    recs = read_log(tmp_path / "run" / "log.jsonl")
    skipped = [r for r in recs if r["epoch"] == 1 and r["train_loss"] is None]
    assert skipped and len(seen["sizes"][1]) == 12 - len(skipped) and min(seen["sizes"][1]) >= 1
    assert len(seen["sizes"][2]) == 12 and all(r["train_loss"] is not None for r in recs if r["epoch"] == 2)


def test_every_rank_skips_a_step_when_any_rank_has_no_active_image(micro_space):
    """Two ranks (no process group needed: each knows every rank's shard of the epoch)."""
    from types import SimpleNamespace

    from hwnas.search.curriculum import EpochView

    y = torch.tensor([0, 1, 2, 3] * 4)
    data = SimpleNamespace(train=torch.utils.data.TensorDataset(torch.zeros(16, 1), y),
                           val=torch.utils.data.TensorDataset(torch.zeros(8, 1), y[:8]), num_classes=4)
    views = [EpochView(SimpleNamespace(config=SearchConfig(batch_size=4, seed=0), world=SimpleNamespace(size=2, rank=r),
                                       data=data, vb=4), epoch=1, active=[0]) for r in (0, 1)]
    for b in range(4):
        idx = [v.shards[v_r][b * 2:(b + 1) * 2] for v_r, v in enumerate(views)]
        mine = [v.train_batch(i, b) for v, i in zip(views, idx)]
        any_empty = any(not bool((y[i] == 0).any()) for i in idx)
        assert all((m is None) == any_empty for m in mine)  # both ranks skip, or neither
        if not any_empty:
            assert all(set(y[m].tolist()) == {0} for m in mine)
    assert any(views[0].train_batch(views[0].shards[0][b * 2:(b + 1) * 2], b) is None for b in range(4))
    assert set(y[views[0].val_batch(0)].tolist()) == {0} and len(views[0].val_batch(0)) == 2  # val: 2 of 8 images


# -- danas: pruning --------------------------------------------------------------------------------------
def _drive(st, steps, seed=0):
    rng = np.random.default_rng(seed)
    asked = []
    for _ in range(steps):
        archs = st.ask()
        asked.append(archs)
        st.tell(archs, rng.normal(size=len(archs)))
    return asked


def test_danas_alive_counts_follow_the_schedule_and_pruned_choices_are_dead(micro_space):
    sizes = [len(d.choices) for d in micro_space.decisions]
    st = create_strategy("danas", micro_space, seed=0, samples_per_step=4, stage_steps=(6, 12, 18))
    want = [sizes]
    for _ in range(3):
        want.append([max(1, math.ceil(0.5 * n)) for n in want[-1]])
    snaps, real_prune = [], st.prune

    def prune():  # the probabilities and alive masks the prune sees
        snaps.append(([p.copy() for p in st.dist.probs_numpy()], [a.copy() for a in st.alive]))
        real_prune()

    st.prune = prune
    for stage in range(3):
        assert st.alive_counts() == want[stage]
        _drive(st, 5, seed=stage)
        assert st.alive_counts() == want[stage] and len(snaps) == stage  # no prune before the stage's last step
        _drive(st, 1, seed=10 + stage)
        assert st.alive_counts() == want[stage + 1] and st.pruned_stages == stage + 1 and len(snaps) == stage + 1
        probs, alive_before = snaps[-1]
        for b, a0, a1 in zip(probs, alive_before, st.alive):  # the kept are the most probable alive ones
            assert not (a1 & ~a0).any() and b[a1].min() >= b[a0 & ~a1].max()
    assert st.alive_counts() == [1, 1, 2] == want[3]  # (8, 8, 9) -> (4, 4, 5) -> (2, 2, 3) -> (1, 1, 2)
    later = _drive(st, 30, seed=99)  # more steps, no more stage ends: nothing revives, nothing else dies
    assert st.alive_counts() == [1, 1, 2]
    for p, a, logit in zip(st.probs(), st.alive, st.dist.params):
        assert torch.all(p.detach()[torch.as_tensor(~a)] == 0.0) and torch.all(logit.detach()[~a] == FLOOR)
    idx = np.array([micro_space.indices(x) for archs in later for x in archs])
    for i, a in enumerate(st.alive):
        assert set(idx[:, i]) <= set(np.flatnonzero(a))  # a pruned choice is never sampled
    assert np.isfinite(st.entropy())


def test_danas_never_prunes_a_decision_below_one_and_without_stages_is_parsec(micro_space):
    st = create_strategy("danas", micro_space, seed=1, samples_per_step=3, keep=0.01, stage_steps=(2, 4, 6))
    _drive(st, 8)
    assert st.alive_counts() == [1, 1, 1] and st.pruned_stages == 3
    assert len(set(map(str, st.ask(5)))) == 1
    plain, parsec = create_strategy("danas", micro_space, seed=3), create_strategy("parsec", micro_space, seed=3)
    a, b = _drive(plain, 10), _drive(parsec, 10)
    assert a == b and all(torch.equal(x, y) for x, y in zip(plain.dist.params, parsec.dist.params))
    for bad, match in [({"keep": 0}, "keep must be"), ({"stage_steps": (5, 5)}, "strictly increasing")]:
        with pytest.raises(SearchError, match=match):
            create_strategy("danas", micro_space, **bad)


def test_danas_state_round_trip_continues_identically(micro_space):
    a = create_strategy("danas", micro_space, seed=0, samples_per_step=4, stage_steps=(5, 10))
    _drive(a, 7)
    b = create_strategy("danas", micro_space, seed=9, samples_per_step=4, stage_steps=(5, 10))
    b.load_state_dict(a.state_dict())
    assert b.alive_counts() == a.alive_counts() and b.pruned_stages == 1
    assert _drive(a, 6, seed=4) == _drive(b, 6, seed=4) and b.pruned_stages == 2
    assert all(torch.equal(x, y) for x, y in zip(a.dist.params, b.dist.params))


# -- danas in the loop ------------------------------------------------------------------------------------
def _danas_config(tmp_path, name, **kw):
    return _micro_config(tmp_path, name, strategy="danas", epochs=4, class_schedule=SCHEDULE, **kw)


def test_danas_in_the_loop_meets_the_budget_prunes_at_stage_ends_and_resumes_identically(tmp_path, micro_space):
    budget = _micro_budget(micro_space, 0.4)
    ref = run_search(_danas_config(tmp_path, "ref", flops_budget=budget))
    assert ref.flops <= budget and ref.search_steps == 15  # 3 search epochs of 5 steps: none skipped
    recs = read_log(tmp_path / "ref" / "log.jsonl")
    # the prune after step 5 (end of stage 1) and step 10 (stage 2); stage 3 (all classes) has none
    assert [r["phase"] for r in recs] == ["stage 1"] * 4 + ["stage 2"] * 5 + ["stage 3"] * 6
    ck = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)
    assert [int(np.sum(a)) for a in ck["strategy"]["alive"]] == [2, 2, 3]  # (8, 8, 9), halved twice, rounded up
    assert ck["strategy"]["pruned_stages"] == 2 and ck["curriculum"]["schedule"] == list(SCHEDULE)

    def kill(ev):
        if ev["stage"] == "search" and ev["epoch"] == 2 and ev["batch"] == 1:
            raise _Kill()

    with pytest.raises(_Kill):
        run_search(_danas_config(tmp_path, "b", flops_budget=budget), progress=kill)
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 2 and ck["strategy"]["pruned_stages"] == 1 and ck["curriculum"]["order"] is not None
    res = run_search(_danas_config(tmp_path, "b", flops_budget=budget, resume=True))
    assert (res.arch, res.archs_sampled, res.supernet_val_acc, res.search_steps) == \
        (ref.arch, ref.archs_sampled, ref.supernet_val_acc, ref.search_steps)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time_s"} for r in rs]  # noqa: E731
    assert strip(read_log(tmp_path / "b" / "log.jsonl")) == strip(recs)
    assert json.loads((tmp_path / "b" / "pareto.json").read_text())["front"] == \
        json.loads((tmp_path / "ref" / "pareto.json").read_text())["front"]


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"class_schedule": (3, 3, 10)}, r"strictly increasing, got \[3, 3, 10\]"),
    ({"class_schedule": (6, 3, 10)}, "strictly increasing"),
    ({"class_schedule": (1, 10)}, "must be >= 2"),
    ({"class_schedule": (3.5, 10)}, "must be class counts"),
    ({"class_schedule": (3, 6, 10), "epochs": 3}, "3 stages but the run has 2 search epoch"),
    ({"strategy": "danas"}, "danas .DA-NAS-style. prunes at the ends of a class curriculum's stages"),
    ({"strategy": "danas", "class_schedule": (3, 10), "train_sampler": "uniform", "search_stage_steps": 2},
     "needs train_sampler='strategy'"),
])
def test_bad_schedules_are_refused_by_the_config(kw, match):
    with pytest.raises(SearchError, match=match) as e:
        SearchConfig(**kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("schedule, match", [
    ((3, 6, 12), r"class_schedule \[3, 6, 12\] asks for 12 classes but digits has 10 classes"),
    ((3, 6), r"must end with every class: its last count is 6 but digits has 10 classes"),
])
def test_schedules_against_the_dataset_are_refused_before_training(tmp_path, micro_space, monkeypatch, schedule,
                                                                   match):
    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(epoch_mod, "supernet_step", no_training)
    with pytest.raises(SearchError, match=match):
        run_search(_micro_config(tmp_path, "x", epochs=4, class_schedule=schedule))
    assert not (tmp_path / "x" / "checkpoint.pt").exists() and not (tmp_path / "x" / "log.jsonl").exists()


@pytest.mark.parametrize("schedule, match", [
    ("3,6,12", "digits has 10 classes"), ("3,6", "must end with every class"), ("6,3,10", "strictly increasing"),
    ("3,x,10", "takes class counts"),
])
def test_cli_refuses_bad_schedules_in_one_line_with_exit_code_2(tmp_path, micro_space, capsys, schedule, match):
    out = tmp_path / "x"
    args = ["search", "--space", "micro", "--strategy", "danas", "--limit", "100", "--epochs", "4",
            "--class-schedule", schedule, "--out", str(out)]
    assert cli_exit_code(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0], err
    assert not (out / "checkpoint.pt").exists() and not (out / "log.jsonl").exists()


def test_a_relaxed_strategy_is_refused_with_a_curriculum(tmp_path, micro_space):
    """The logit mask hooks the supernet's sampled forward, which dmasking's relaxed forward bypasses."""
    pytest.importorskip("hwnas.search.dmasking")
    with pytest.raises(SearchError, match="relaxed forward does not run: drop --class-schedule"):
        run_search(_micro_config(tmp_path, "x", strategy="dmasking", epochs=4, class_schedule=SCHEDULE))
    assert not (tmp_path / "x" / "checkpoint.pt").exists()
