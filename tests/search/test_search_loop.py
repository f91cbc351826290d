"""The search loop end to end: real supernet training on digits, real files, resume, CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from hwnas.cost import arch_cost, cost_extremes
from hwnas.errors import SearchError
from hwnas.search import SearchConfig, run_search
from hwnas.search.loop import read_log

RESULT_KEYS = {"space", "arch", "resolution", "strategy", "seed", "dataset", "predictor", "latency_budget_ms",
               "flops_budget", "predicted_latency_ms", "flops", "params", "supernet_val_acc", "archs_sampled",
               "wall_time_s", "budget_margin"}


def _micro_config(tmp_path, name="run", **kw):
    base = dict(space="micro", dataset="digits", limit=200, batch_size=32, val_batch_size=32, epochs=3,
                warmup_epochs=1, samples_per_step=3, seed=0, out=str(tmp_path / name), threads=1)
    base.update(kw)
    return SearchConfig(**base)


def _micro_budget(micro_space, frac=0.4):
    (lo, _), (hi, _) = cost_extremes(micro_space)
    return lo + frac * (hi - lo)


class _Kill(Exception):
    pass


def test_run_search_writes_outputs_and_meets_flops_budget(tmp_path, micro_space):
    budget = _micro_budget(micro_space)
    cfg = _micro_config(tmp_path, strategy="fpnas", flops_budget=budget, epochs=2)
    res = run_search(cfg)
    out = tmp_path / "run"
    for f in ("config.json", "log.jsonl", "checkpoint.pt", "result.json", "supernet.pt", "search.png"):
        assert (out / f).exists(), f
    result = json.loads((out / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert result["arch"] == res.arch and result["flops"] <= budget
    assert result["flops"] == arch_cost(micro_space, res.arch, num_classes=10).flops
    assert result["budget_margin"] == pytest.approx((budget - result["flops"]) / budget)
    assert 0.0 <= result["budget_margin"] < 1.0
    assert json.loads((out / "config.json").read_text())["flops_budget"] == budget
    records = read_log(out / "log.jsonl")
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == res.search_steps
    assert records[-1]["archs_sampled"] == res.archs_sampled == sum(r["k"] for r in records)
    for key in ("entropy", "archs_sampled", "expected_cost", "top_arch", "phase"):
        assert records[-1][key] is not None
    assert {r["phase"] for r in records} <= {"factorized", "joint"}
    # the exact expected FLOPs is logged and lies within the space's range
    (lo, _), (hi, _) = cost_extremes(micro_space)
    assert lo * 0.9 <= records[-1]["expected_cost"] <= hi * 1.1
    # supernet.pt loads into a fresh Supernet(space, num_classes, resolution)
    from hwnas.nn.supernet import Supernet

    net = Supernet(micro_space, 10, 16)
    net.load_state_dict(torch.load(out / "supernet.pt"))
    # rerunning into the same directory without --resume is refused
    with pytest.raises(SearchError, match="--resume"):
        run_search(cfg)


def test_flops_budget_below_minimum_is_refused(tmp_path, micro_space):
    (lo, _), _ = cost_extremes(micro_space)
    with pytest.raises(SearchError, match="below the cheapest architecture"):
        run_search(_micro_config(tmp_path, flops_budget=lo * 0.5))
    assert not (tmp_path / "run").exists()  # refused before any file is written


def test_config_validation():
    with pytest.raises(SearchError, match="one budget"):
        SearchConfig(flops_budget=1e6, latency_budget_ms=2.0, predictor="p.hwp")
    with pytest.raises(SearchError, match="needs a latency predictor"):
        SearchConfig(latency_budget_ms=2.0)
    with pytest.raises(SearchError, match="penalty must be one of"):
        SearchConfig(penalty="soft")
    with pytest.raises(SearchError, match="warmup_epochs"):
        SearchConfig(epochs=1, warmup_epochs=1)


def test_differentiable_needs_distribution(tmp_path, micro_space):
    with pytest.raises(SearchError, match="acts on a distribution.s gradient"):
        run_search(_micro_config(tmp_path, strategy="random", penalty="differentiable",
                                 flops_budget=_micro_budget(micro_space)))


@pytest.mark.slow
def test_resume_after_kill_continues_from_checkpoint(tmp_path, micro_space):
    """Run 2 epochs; rerun with --resume and 4 epochs, killed inside epoch 4; resume again.
    The log has no duplicate steps and the result equals an uninterrupted 4-epoch run."""
    budget = _micro_budget(micro_space)
    ref = run_search(_micro_config(tmp_path, "ref", strategy="parsec", epochs=4, flops_budget=budget))

    run_search(_micro_config(tmp_path, "b", strategy="parsec", epochs=2, flops_budget=budget))
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 2
    steps_after_2 = ck["step"]
    seen = []

    def kill_in_epoch_4(ev):
        seen.append((ev["stage"], ev["epoch"]))
        if ev["stage"] == "search" and ev["epoch"] == 3 and ev["batch"] == 2:
            raise _Kill()

    with pytest.raises(_Kill):
        run_search(_micro_config(tmp_path, "b", strategy="parsec", epochs=4, flops_budget=budget, resume=True),
                   progress=kill_in_epoch_4)
    # it continued at epoch index 2 (the third epoch), never redoing epochs 0-1
    assert min(e for s, e in seen if s in ("search", "warmup")) == 2
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 3
    partial = read_log(tmp_path / "b" / "log.jsonl")
    assert partial[-1]["epoch"] == 3  # lines of the killed epoch are in the log ...
    res = run_search(_micro_config(tmp_path, "b", strategy="parsec", epochs=4, flops_budget=budget, resume=True))
    records = read_log(tmp_path / "b" / "log.jsonl")
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(steps) + 1))  # ... but no step appears twice
    assert steps[steps_after_2] == steps_after_2 + 1
    ref_records = read_log(tmp_path / "ref" / "log.jsonl")
    assert [(r["top_arch"], r["entropy"], r["archs_sampled"]) for r in records] == \
           [(r["top_arch"], r["entropy"], r["archs_sampled"]) for r in ref_records]
    assert res.arch == ref.arch and res.archs_sampled == ref.archs_sampled
    assert res.supernet_val_acc == pytest.approx(ref.supernet_val_acc)
    front = lambda run: [(p["arch"], round(p["acc"], 6)) for p in json.loads((tmp_path / run / "pareto.json").read_text())["front"]]  # noqa: E731
    assert front("b") == front("ref")  # the Pareto front too
    # settings other than epochs must match the checkpoint
    with pytest.raises(SearchError, match="settings differ"):
        run_search(_micro_config(tmp_path, "b", strategy="fpnas", epochs=5, flops_budget=budget, resume=True))


@pytest.mark.slow
def test_run_search_tiny_digits_flops_budget(tmp_path):
    """A short real search on the default space and data."""
    from hwnas.space import get_space

    space = get_space("tiny")
    (lo, _), (hi, _) = cost_extremes(space)
    budget = lo + 0.3 * (hi - lo)
    res = run_search(SearchConfig(space="tiny", strategy="fpnas", flops_budget=budget, epochs=2, warmup_epochs=1,
                                  limit=300, samples_per_step=3, batch_size=64, out=str(tmp_path / "t"), threads=1))
    assert res.flops <= budget and res.budget_margin >= 0
    assert res.archs_sampled > 0 and res.supernet_val_acc >= 0.0
    assert res.resolution == 32 and res.dataset == "digits"


@pytest.mark.slow
@pytest.mark.parametrize("penalty", ["hinge", "differentiable"])
def test_latency_budget_with_predictor(tmp_path, micro_space, micro_predictor, penalty):
    path, p = micro_predictor
    rng = np.random.default_rng(1)
    pred = p.predict([micro_space.sample(rng) for _ in range(200)])
    budget = float(np.quantile(pred, 0.3))
    res = run_search(_micro_config(tmp_path, penalty, strategy="fpnas", latency_budget_ms=budget,
                                   predictor=str(path), penalty=penalty, force=True))
    assert res.predicted_latency_ms is not None and res.predicted_latency_ms <= budget
    assert res.predicted_latency_ms == pytest.approx(float(p.predict([micro_space.parse(res.arch)])[0]), rel=1e-5)
    assert res.budget_margin == pytest.approx((budget - res.predicted_latency_ms) / budget)
    records = read_log(tmp_path / penalty / "log.jsonl")
    assert all(r["expected_latency_ms"] is not None for r in records)  # the MLP's expected latency


def test_latency_budget_below_minimum_refused(tmp_path, micro_space, micro_predictor):
    path, p = micro_predictor
    with pytest.raises(SearchError, match="below the cheapest"):
        run_search(_micro_config(tmp_path, latency_budget_ms=0.01, predictor=str(path), force=True))


def test_cli_search_json_and_errors(tmp_path, micro_space):
    from click.testing import CliRunner

    from hwnas.cli.main import cli

    (lo, _), (hi, _) = cost_extremes(micro_space)
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(cli, ["search", "--space", "micro", "--strategy", "random", "--flops-budget",
                            f"{(lo + 0.5 * (hi - lo)) / 1e3:.1f}K", "--epochs", "2", "--limit", "120",
                            "--samples", "2", "--batch-size", "32", "--threads", "1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert RESULT_KEYS <= set(data) and data["strategy"] == "random"
    assert data["flops"] <= lo + 0.5 * (hi - lo)
    from hwnas.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--space", "micro", "--flops-budget", "1K", "--out", str(tmp_path / "x")])
    assert e.value.code == 2


def test_cli_search_defaults_match_search_config():
    """The CLI's shown defaults are the library's: one source of truth a user can read in --help."""
    from hwnas.cli.search_cmd import search

    defaults = SearchConfig()
    shared = {p.name: p.default for p in search.params
              if p.name in {f.name for f in dataclasses.fields(SearchConfig)} and isinstance(p.default, (int, float, str))}
    assert {"arch_lr", "weight_estimator", "epochs", "samples_per_step", "batch_size"} <= set(shared)
    for name, value in shared.items():
        assert value == getattr(defaults, name), name


def test_importance_weight_gradient_by_hand(micro_space):
    """PARSEC's weight gradient: sum_k omega_k grad loss_k, omega = softmax(-n * loss)."""
    import torch.nn.functional as F

    from hwnas.distributed import World
    from hwnas.nn.supernet import Supernet
    from hwnas.search.loop_state import LoopState
    from hwnas.search.train_step import supernet_step

    torch.manual_seed(0)
    net = Supernet(micro_space, 4, 16, seed=0)
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    paths = [micro_space.from_indices(i) for i in ([0, 1, 2], [5, 1, 8], [0, 7, 2])]
    cfg = SearchConfig(space="micro", train_paths=0, weight_estimator="importance")
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    loop = LoopState(cfg, World(), micro_space, net, net, opt, None, None, None, 1, 6, lambda: 0.0, lambda e: None)
    supernet_step(loop, paths, x, y, warm=False)
    got = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    losses = [F.cross_entropy(net(x, a), y) for a in paths]
    omega = torch.softmax(-6 * torch.stack([lo.detach() for lo in losses]), 0)
    net.zero_grad()
    sum(w * lo for w, lo in zip(omega, losses)).backward()
    want = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and len(got) > 0
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6), n
    with pytest.raises(SearchError, match="needs train_paths=0"):
        SearchConfig(space="micro", train_paths=1, weight_estimator="importance")


def test_fpnas_switches_at_the_configured_epoch_and_logcost_runs(tmp_path, micro_space):
    budget = _micro_budget(micro_space, 0.3)
    res = run_search(_micro_config(tmp_path, strategy="fpnas", epochs=4, switch_epoch=2, flops_budget=budget,
                                   penalty="logcost", train_paths=0, weight_estimator="importance"))
    steps_per_epoch = res.search_steps // 3
    assert res.switched_at == 2 * steps_per_epoch
    recs = read_log(tmp_path / "run" / "log.jsonl")
    # a step's phase is logged after its update: the step that switches is the first "joint"
    assert {r["phase"] for r in recs if r["step"] < 2 * steps_per_epoch} == {"factorized"}
    assert {r["phase"] for r in recs if r["step"] >= 2 * steps_per_epoch} == {"joint"}
    # K_t = max(1, round(lambda H_t)), H_t the entropy the previous step's update left
    for prev, r in zip(recs, recs[1:]):
        assert r["k"] == max(1, round(0.25 * prev["entropy"]))
    with pytest.raises(SearchError, match="switch_epoch must be in"):
        _micro_config(tmp_path, "bad", strategy="fpnas", epochs=3, switch_epoch=5)
    with pytest.raises(SearchError, match="needs reward='loss'"):
        run_search(_micro_config(tmp_path, "acc", strategy="parsec", reward="acc"))


def test_names_other_code_imports_from_the_loop_module_still_exist():
    """``benchmarks/ddp_bench.py`` and ``tests/search/ddp_worker.py`` use these names of
    ``hwnas.search.loop`` from before it was split into modules."""
    from hwnas.search import loop
    from hwnas.search.loop_state import LoopState
    from hwnas.search.train_step import rank_paths, supernet_step

    assert (loop._Loop, loop._rank_paths, loop._supernet_step) == (LoopState, rank_paths, supernet_step)
    assert loop.SearchConfig is SearchConfig and callable(loop._final_result) and callable(loop.switch_epoch)


def test_a_checkpoint_from_before_training_samplers_resumes(tmp_path, micro_space):
    """Checkpoints written before the loop was split hold no ``train_sampler`` state and their
    config lacks ``train_sampler_params``: they resume, and end as an uninterrupted run."""
    budget = _micro_budget(micro_space)
    ref = run_search(_micro_config(tmp_path, "ref", strategy="parsec", epochs=3, flops_budget=budget))
    run_search(_micro_config(tmp_path, "old", strategy="parsec", epochs=2, flops_budget=budget))
    path = tmp_path / "old" / "checkpoint.pt"
    ck = torch.load(path, weights_only=False)
    del ck["train_sampler"], ck["config"]["train_sampler_params"]
    torch.save(ck, path)
    (tmp_path / "old" / "result.json").unlink()
    res = run_search(_micro_config(tmp_path, "old", strategy="parsec", epochs=3, flops_budget=budget, resume=True))
    assert (res.arch, res.archs_sampled, res.supernet_val_acc) == (ref.arch, ref.archs_sampled, ref.supernet_val_acc)
