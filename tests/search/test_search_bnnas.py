"""BN-NAS in the loop (``--strategy bnnas``): BN-only training after warm-up, the data-free BN
indicator as the search stage's fitness, the budget, resume, and bad input.

The decisive test (``../shared/research/seed_strategies.md`` 3.6, test 2, through a real run):
every parameter but the trained BNs' gamma and beta is bit-identical after the BN-only epochs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas.errors import SearchError
from hwnas.nn.bn_nas import bn_indicator
from hwnas.nn.supernet import Supernet, private_bn_from_state
from hwnas.search import SearchConfig, create_train_sampler, run_search
from hwnas.search.bnnas import bn_rewards, indicator_reduce
from hwnas.search.outputs import read_log
from tests.search.test_search_loop import _Kill, _micro_budget, _micro_config

EVO = {"population": 6, "parents": 3, "mutations": 3, "crossovers": 3}


def _bn_config(tmp_path, name, **kw):
    return _micro_config(tmp_path, name, **{**dict(strategy="bnnas", search_stage_steps=3, strategy_params=EVO), **kw})


def _trained_names(net, bns="last") -> set[str]:
    """Names of the parameters the ``bn_only`` sampler trains on ``net``."""
    params = create_train_sampler("bn_only", bns=bns).train_params(net)[0]["params"]
    ids = {id(p) for p in params}
    net.requires_grad_(True)
    return {n for n, p in net.named_parameters() if id(p) in ids}


def test_preset_is_the_whole_method_and_stays_overridable():
    cfg = SearchConfig(strategy="bnnas")
    assert (cfg.train_sampler, cfg.search_stage_steps, cfg.private_bn, cfg.reward_kind) == \
        ("bn_only", 20, ("project",), "bn")
    assert json.loads(json.dumps(cfg.to_dict()))["private_bn"] == ["project"]  # saved in config.json
    other = SearchConfig(strategy="bnnas", reward="loss", train_sampler="uniform", search_stage_steps=2)
    assert (other.reward_kind, other.train_sampler, other.private_bn) == ("loss", "uniform", ("project",))
    assert SearchConfig(strategy="evolution").private_bn == () and SearchConfig().reward_kind == "loss"
    # a string is one position, as Supernet takes it
    assert SearchConfig(strategy="bnnas", private_bn="project").private_bn == ("project",)


def test_bn_only_sampler_trains_only_the_project_bns(micro_space):
    net = Supernet(micro_space, 10, 16, seed=0, private_bn=("project",))
    names = _trained_names(net)
    assert names and all(".project_bns." in n or ".proj_bn." in n for n in names)
    assert all(n.endswith((".weight", ".bias")) for n in names)
    allbn = _trained_names(net, "all")
    assert names < allbn and "stem.1.weight" in allbn and "classifier.weight" not in allbn
    groups = create_train_sampler("bn_only").train_params(net)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0  # BN gets no weight decay (official code)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == names  # everything else frozen


def test_indicator_reward_is_the_mean_over_bn_layers_in_a_skippable_space(micro_space):
    assert indicator_reduce(micro_space) == "mean"  # micro's last layer can skip
    net = Supernet(micro_space, 10, 16, seed=0, private_bn=("project",))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.as_tensor(rng.normal(size=m.weight.shape)))
    archs = [micro_space.sample(rng) for _ in range(8)]
    want = [bn_indicator(net, a, reduce="mean") for a in archs]
    assert bn_rewards(net, archs).tolist() == want and len(set(want)) > 1


def _frozen_equal(before: dict, after: dict, trained: set[str], params: set[str]) -> None:
    frozen = params - trained
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), \
        [k for k in frozen if not torch.equal(before[k], after[k])]
    assert any(not torch.equal(before[k], after[k]) for k in trained)  # the BN-only phase did learn


def test_bnnas_run_freezes_every_weight_but_bn_meets_the_budget_and_scores_without_data(tmp_path, micro_space):
    """micro/digits, FLOPs budget: 1 warm-up epoch (all weights), 2 BN-only epochs, 3 generations."""
    budget = _micro_budget(micro_space, 0.4)
    after_warmup = {}

    def grab(ev):  # the checkpoint written after the warm-up epoch: the supernet as BN-only training starts
        if ev["stage"] == "epoch" and ev["epoch"] == 1:
            after_warmup.update(torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)["supernet"])

    res = run_search(_bn_config(tmp_path, "ref", flops_budget=budget), progress=grab)
    final = torch.load(tmp_path / "ref" / "supernet.pt", weights_only=False)
    assert private_bn_from_state(final) == ("project",)
    net = Supernet(micro_space, 10, 16, private_bn=("project",))
    params = {n for n, _ in net.named_parameters()}
    _frozen_equal(after_warmup, final, _trained_names(net), params)
    # warm-up trained every weight (the supernet is not at its init when BN-only training starts)
    init = Supernet(micro_space, 10, 16, seed=0, private_bn=("project",)).state_dict()
    assert not torch.equal(init["classifier.weight"], after_warmup["classifier.weight"])
    # the checkpoint's optimizer holds only the BN parameters, without weight decay
    ck = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=False)
    (group,) = ck["optimizer"]["param_groups"]
    assert len(group["params"]) == len(_trained_names(net)) and group["weight_decay"] == 0.0
    # the budget holds, and the search stage ran no image (loss and accuracy are null in the log)
    assert res.flops <= budget and res.search_steps == 3
    recs = read_log(tmp_path / "ref" / "log.jsonl")
    assert [r["phase"] for r in recs] == ["search stage"] * 3
    assert all(r["loss"] is None and r["acc"] is None and r["mean_cost"] <= budget for r in recs)
    # the final arch is the one of best indicator on the trained supernet
    net.load_state_dict(final)
    tops = sorted({r["top_arch"] for r in recs})
    scores = dict(zip(tops, bn_rewards(net, [micro_space.parse(a) for a in tops])))
    assert res.arch == recs[-1]["top_arch"] and scores[res.arch] == max(scores.values())
    assert res.archs_sampled == 6 + 6 + 6


def test_without_warmup_every_weight_but_bn_stays_at_its_init(tmp_path, micro_space):
    """``warmup_epochs=0`` is the official code's setting: BN-only training from the init."""
    run_search(_bn_config(tmp_path, "w0", flops_budget=_micro_budget(micro_space, 0.4), epochs=2, warmup_epochs=0))
    final = torch.load(tmp_path / "w0" / "supernet.pt", weights_only=False)
    init = Supernet(micro_space, 10, 16, seed=0, private_bn=("project",))
    _frozen_equal(init.state_dict(), final, _trained_names(init), {n for n, _ in init.named_parameters()})


@pytest.mark.parametrize("kill_epoch", [1, 2])
def test_bnnas_resumes_to_the_same_result(tmp_path, micro_space, kill_epoch):
    """Killed in the first BN-only epoch (the checkpoint holds the warm-up's optimizer) or in the
    second (it holds the BN-only one), a resumed run ends exactly as an uninterrupted one."""
    budget = _micro_budget(micro_space, 0.4)
    ref = run_search(_bn_config(tmp_path, "ref", flops_budget=budget))

    def kill(ev):
        if ev["stage"] == "train" and ev["epoch"] == kill_epoch and ev["batch"] == 1:
            raise _Kill()

    with pytest.raises(_Kill):
        run_search(_bn_config(tmp_path, "b", flops_budget=budget), progress=kill)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == kill_epoch
    res = run_search(_bn_config(tmp_path, "b", flops_budget=budget, resume=True))
    assert (res.arch, res.archs_sampled, res.supernet_val_acc) == (ref.arch, ref.archs_sampled, ref.supernet_val_acc)
    a = torch.load(tmp_path / "ref" / "supernet.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "supernet.pt", weights_only=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_log(tmp_path / "b" / "log.jsonl") == [
        {**r, "time_s": s["time_s"]} for r, s in zip(read_log(tmp_path / "ref" / "log.jsonl"),
                                                      read_log(tmp_path / "b" / "log.jsonl"))]


def test_resume_refuses_another_bn_layout(tmp_path, micro_space):
    budget = _micro_budget(micro_space, 0.4)
    run_search(_bn_config(tmp_path, "r", flops_budget=budget, epochs=2))
    with pytest.raises(SearchError, match=r"private_bn=\(\) \(was \('project',\)\)"):
        run_search(_bn_config(tmp_path, "r", flops_budget=budget, epochs=3, resume=True, private_bn=(),
                              reward="loss"))


def test_a_checkpoint_from_before_private_bn_resumes(tmp_path, micro_space):
    """A run started before ``private_bn`` and the preset ``reward`` existed ran with shared BN and
    no preset reward: its checkpoint resumes (``field_default`` gives the resolved defaults)."""
    budget = _micro_budget(micro_space, 0.4)
    run_search(_micro_config(tmp_path, "old", strategy="random", epochs=2, flops_budget=budget))
    path = tmp_path / "old" / "checkpoint.pt"
    ck = torch.load(path, weights_only=False)
    del ck["config"]["private_bn"]
    torch.save(ck, path)
    (tmp_path / "old" / "result.json").unlink()
    res = run_search(_micro_config(tmp_path, "old", strategy="random", epochs=3, flops_budget=budget, resume=True))
    assert res.epochs == 3


def test_bnnas_under_a_latency_budget(tmp_path, micro_space, micro_predictor, micro_latency_budget):
    path, p = micro_predictor
    budget = micro_latency_budget
    res = run_search(_bn_config(tmp_path, "lat", epochs=2, latency_budget_ms=budget, predictor=str(path), force=True))
    assert res.predicted_latency_ms <= budget
    assert all(r["mean_cost"] <= budget for r in read_log(tmp_path / "lat" / "log.jsonl"))


@pytest.mark.parametrize("kw, match", [
    ({"strategy": "evolution", "train_sampler": "uniform", "search_stage_steps": 2, "reward": "bn"},
     "needs private_bn to include 'project'"),
    ({"strategy": "bnnas", "private_bn": ()}, "needs private_bn to include 'project', got private_bn=()"),
    ({"strategy": "bnnas", "private_bn": ("head",)}, "private_bn must name BN positions among .*got 'head'"),
    ({"strategy": "bnnas", "penalty": "mnas"}, "no accuracy for the mnas penalty"),
    ({"strategy": "bnnas", "train_sampler_params": {"bns": "first"}}, "bns .* must be one of last, all, got 'first'"),
    ({"strategy": "bnnas", "train_sampler_params": {"pool_size": 3}}, "bad parameters for train_sampler 'bn_only'"),
    ({"strategy": "bnnas", "search_stage_steps": 0}, "give search_stage_steps > 0"),
])
def test_bad_bnnas_settings_are_refused_by_the_config(kw, match):
    with pytest.raises(SearchError, match=match):
        SearchConfig(**kw)


def test_cli_refuses_bad_bnnas_input_in_one_line_before_training(tmp_path, capsys, micro_space):
    from hwnas.cli.main import main

    cases = [(["--penalty", "mnas"], False), (["--search-stage-steps", "0"], False),
             (["--reward", "bn", "--strategy", "evolution", "--train-sampler", "uniform", "--search-stage-steps", "2"],
              False),
             # a strategy without a distribution cannot take a penalty on one: refused once the
             # budget's cost is known (config.json is written), before any training
             (["--penalty", "differentiable"], True)]
    for i, (args, leaves_config) in enumerate(cases):
        out = tmp_path / f"x{i}"
        with pytest.raises(SystemExit) as e:
            main(["search", "--space", "micro", "--strategy", "bnnas", "--flops-budget", "300K", "--limit", "200",
                  *args, "--out", str(out)])
        assert e.value.code == 2, args
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error:"), (args, err)
        assert not (out / "checkpoint.pt").exists() and not (out / "log.jsonl").exists()
        assert (out / "config.json").exists() == leaves_config, args
