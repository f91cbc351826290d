"""Data-parallel search under torchrun with gloo (CPU): real processes, real all-reduces.

Each launch is ``torchrun --standalone`` (a free port per launch) of ``ddp_worker.py`` on
``tiny`` with a few hundred digits; the runs are made once per module (``runs``) and the
tests read them, because a launch costs seconds, most of it importing torch per rank.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.distributed import World, digest
from hwnas.search import SearchConfig
from hwnas.search.loop import read_log
from tests.torchrun import torchrun

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("ddp_worker.py")
BASE = dict(space="tiny", dataset="digits", limit=200, batch_size=32, val_batch_size=32, epochs=2,
            warmup_epochs=1, samples_per_step=4, seed=3, threads=1, flops_budget=4e6)


def _torchrun(n: int, args: list[str], float64: bool = False) -> subprocess.CompletedProcess:
    return torchrun(n, args, env={"HWNAS_TEST_FLOAT64": "1"} if float64 else None)  # see ddp_worker.py


def _launch(dump: Path, n: int, float64: bool = True, **kw) -> dict:
    """Run the worker on ``n`` ranks into ``dump``: each rank's final state and result."""
    dump.mkdir(parents=True)
    cfg = dict(BASE, out=str(dump / "run"), **kw)
    proc = _torchrun(n, [str(WORKER), json.dumps(cfg), str(dump)], float64=float64)
    assert proc.returncode == 0, f"{sorted(os.listdir(dump))}\n{proc.stderr[-3000:]}"
    return {"states": [torch.load(dump / f"rank{r}.pt", weights_only=False) for r in range(n)],
            "results": [json.loads((dump / f"result{r}.json").read_text()) for r in range(n)],
            "out": dump / "run"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """float64 runs (exact comparisons; in float32 two exact formulas of a BN gradient after a
    depthwise conv already differ by ~1%, and a run amplifies that)."""
    root = tmp_path_factory.mktemp("ddp")
    return {
        "own-ddp": _launch(root / "own-ddp", 2, grad_sync="ddp"),
        "own-allreduce": _launch(root / "own-allreduce", 2, grad_sync="allreduce"),
        "one": _launch(root / "one", 1, rank_paths="shared"),
        "shared-ddp": _launch(root / "shared-ddp", 2, rank_paths="shared", grad_sync="ddp"),
    }


#: GreedyNAS, small, no warm-up (whose uniform paths are the ranks' own with rank_paths='own'):
#: the greedy survivors are every rank's paths, whatever rank_paths says
GREEDY = dict(strategy="greedynas", warmup_epochs=0, search_stage_steps=2,
              train_sampler_params={"candidates": 6, "keep_top": 3},
              strategy_params={"population": 4, "parents": 2, "mutations": 2, "crossovers": 2})


@pytest.fixture(scope="module")
def greedy_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_greedy")
    return {"one": _launch(root / "one", 1, **GREEDY), "two": _launch(root / "two", 2, **GREEDY)}


#: the other two-stage methods, small: AttentiveNAS trains three paths a step (max, attentive,
#: min; distilled), BN-NAS only BN after its warm-up; rank 0's paths on every rank (the
#: warm-up's uniform paths too), so one process with twice the batch computes the same
SMALL_EVOLUTION = {"population": 4, "parents": 2, "mutations": 2, "crossovers": 2}
TWO_STAGE = {
    "attentivenas": dict(strategy="attentivenas", search_stage_steps=2, strategy_params=SMALL_EVOLUTION,
                         train_sampler_params={"candidates": 2, "table_size": 200}, rank_paths="shared", limit=120),
    "bnnas": dict(strategy="bnnas", search_stage_steps=2, strategy_params=SMALL_EVOLUTION, rank_paths="shared",
                  limit=120),
    # not two-stage, but a step that bypasses the DDP wrapper too: the relaxed forward of every
    # choice at once, then the gates' gradient step, the same on every rank
    "dmasking": dict(strategy="dmasking", rank_paths="shared", limit=120),
}


@pytest.fixture(scope="module", params=sorted(TWO_STAGE))
def two_stage_runs(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ddp_{request.param}")
    kw = TWO_STAGE[request.param]
    return request.param, {"one": _launch(root / "one", 1, **kw), "two": _launch(root / "two", 2, **kw)}


def test_two_stage_samplers_on_two_ranks_match_one_process(two_stage_runs):
    """Several paths a step (AttentiveNAS), BN-only training (BN-NAS) and the relaxed forward
    (DMaskingNAS, whose gates must also end equal) reduce the same
    gradients on 2 ranks x 16 images as one process on 32, and BN-NAS's frozen weights stay
    frozen under DDP."""
    name, r = two_stage_runs
    one, two = r["one"]["states"][0]["supernet"], r["two"]["states"][0]["supernet"]
    assert _max_weight_diff(one, two) < 1e-9, name
    assert digest(two) == digest(r["two"]["states"][1]["supernet"])
    assert r["one"]["results"][0]["arch"] == r["two"]["results"][0]["arch"] and r["two"]["results"][0]["world_size"] == 2
    if name == "dmasking":
        gates = [s["strategy"]["dist"]["params"] for s in (r["one"]["states"][0], *r["two"]["states"])]
        assert all(float((a - b).abs().max()) < 1e-9 for other in gates[1:] for a, b in zip(gates[0], other))


def _max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_two_ranks_end_bit_identical_and_write_one_run(runs):
    for name in ("own-ddp", "own-allreduce", "shared-ddp"):
        states, results = runs[name]["states"], runs[name]["results"]
        assert digest(states[0]["supernet"]) == digest(states[1]["supernet"]), name
        assert digest(states[0]["strategy"]) == digest(states[1]["strategy"]), name
        assert results[0] == results[1] and results[0]["world_size"] == 2
    out = runs["own-ddp"]["out"]
    for f in ("config.json", "log.jsonl", "checkpoint.pt", "result.json", "supernet.pt", "pareto.json"):
        assert (out / f).exists(), f
    steps = [r["step"] for r in read_log(out / "log.jsonl")]
    assert steps == list(range(1, runs["own-ddp"]["results"][0]["search_steps"] + 1))  # one writer
    single = runs["one"]["results"][0]
    assert set(single) == set(runs["own-ddp"]["results"][0]) and single["world_size"] == 1  # one schema
    # ranks that train their own paths train more of them than one process: other weights
    assert _max_weight_diff(runs["own-ddp"]["states"][0]["supernet"], runs["one"]["states"][0]["supernet"]) > 1e-3


def test_two_ranks_with_batch_b_match_one_rank_with_batch_2b(runs):
    """With rank 0's paths on both ranks, 2 x 16 images is one process's 32-image batch: BN
    statistics over both ranks' images and averaged gradients give the same weights and the
    same distribution after the whole run."""
    one = runs["one"]
    for name in ("shared-ddp",):  # (DDP and the flat all-reduce agree: the next test)
        two = runs[name]
        assert _max_weight_diff(one["states"][0]["supernet"], two["states"][0]["supernet"]) < 1e-9, name
        r1, r2 = one["results"][0], two["results"][0]
        assert r1["arch"] == r2["arch"] and r1["archs_sampled"] == r2["archs_sampled"]
        p1 = [np.asarray(p) for p in one["states"][0]["strategy"]["dist"]["params"]]
        p2 = [np.asarray(p) for p in two["states"][0]["strategy"]["dist"]["params"]]
        assert all(np.allclose(a, b, atol=1e-9) for a, b in zip(p1, p2)), name


def test_greedy_sampler_on_two_ranks_matches_one_process(greedy_runs):
    """The greedy sampler's generator and the gathered scores are the same on every rank, so
    both ranks train the same survivors (BN over both shards): 2 x 16 images equal 1 x 32,
    down to the candidate pool and the evolution that searched the frozen supernet."""
    one, two = greedy_runs["one"], greedy_runs["two"]
    assert _max_weight_diff(one["states"][0]["supernet"], two["states"][0]["supernet"]) < 1e-9
    assert digest(two["states"][0]["supernet"]) == digest(two["states"][1]["supernet"])
    r1, r2 = one["results"][0], two["results"][0]
    assert (r1["arch"], r1["archs_sampled"]) == (r2["arch"], r2["archs_sampled"]) and r2["world_size"] == 2
    g1, g2 = (torch.load(r["out"] / "checkpoint.pt", weights_only=False)["train_sampler"] for r in (one, two))
    assert [a for a, _ in g1["pool"]] == [a for a, _ in g2["pool"]] and g1["stats"] == g2["stats"]
    assert np.allclose([s for _, s in g1["pool"]], [s for _, s in g2["pool"]], atol=1e-9)
    assert r1["archs_sampled"] == g1["archs_scored"] + 4 + 4  # the evolution's two generations


def test_ddp_and_the_flat_allreduce_reduce_the_same_gradients(runs):
    """Two independent reductions (DDP's reducer; one flat all-reduce with a used-mask) of
    ranks that train different paths agree, so neither drops a rank's gradient."""
    assert _max_weight_diff(runs["own-ddp"]["states"][0]["supernet"],
                            runs["own-allreduce"]["states"][0]["supernet"]) < 1e-9


def test_resume_with_another_world_size_continues_the_checkpoint(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["own-ddp"]["out"], out)  # a 2-rank run of 2 epochs, checkpoint included
    steps_two = runs["own-ddp"]["results"][0]["search_steps"]
    dump = tmp_path / "dump"
    dump.mkdir()
    cfg = dict(BASE, out=str(out), epochs=3, resume=True)
    proc = _torchrun(1, [str(WORKER), json.dumps(cfg), str(dump)], float64=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((dump / "result0.json").read_text())
    assert resumed["world_size"] == 1 and resumed["epochs"] == 3
    assert resumed["search_steps"] == 2 * steps_two  # one more search epoch of the same length
    steps = [r["step"] for r in read_log(out / "log.jsonl")]
    assert steps == list(range(1, resumed["search_steps"] + 1))
    assert torch.load(out / "checkpoint.pt", weights_only=False)["world_size"] == 1


def _cli(n: int, *args: str) -> subprocess.CompletedProcess:
    return _torchrun(n, ["-m", "hwnas", "search", "--space", "tiny", "--limit", "200", "--epochs", "2",
                         "--flops-budget", "4M", *args])


def test_bad_input_under_torchrun_is_one_line_and_leaves_no_run(runs, tmp_path):
    proc = _cli(2, "--batch-size", "33", "--out", str(tmp_path / "odd"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: batch_size=33 is one step's batch over all 2 ranks and must be a multiple of the "
                      "world size; valid nearby: 32, 34"]
    assert "exitcode  : 2" in proc.stderr and proc.returncode != 0  # each rank exits 2, torchrun 1
    assert not (tmp_path / "odd").exists()
    # a checkpoint of another space: refused on rank 0, reported once, nothing overwritten
    run = tmp_path / "run"
    shutil.copytree(runs["own-ddp"]["out"], run)
    before = (run / "result.json").read_bytes()
    proc = _cli(2, "--batch-size", "32", "--out", str(run), "--resume", "--space", "fbnet")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot resume" in errors[0] and "space='fbnet'" in errors[0], proc.stderr[-2000:]
    assert (run / "result.json").read_bytes() == before


def test_rank_paths_are_the_ranks_own_draws_and_need_no_state(micro_space):
    from hwnas.search import create_strategy
    from hwnas.search.loop_state import LoopState
    from hwnas.search.train_step import rank_paths

    strategy = create_strategy("fpnas", micro_space, seed=0)
    archs = strategy.ask()

    def paths(rank, **kw):
        cfg = SearchConfig(space="micro", **kw)
        loop = LoopState(cfg, World(rank, 4), micro_space, None, None, None, strategy, None, None, 1, 8,
                     lambda: 0.0, lambda e: None)
        return [str(a) for a in rank_paths(loop, archs[:2], archs, epoch=1, batch=5)]

    mine = [paths(r, train_paths=2) for r in range(4)]
    assert mine[0] == [str(a) for a in archs[:2]]
    assert len({tuple(p) for p in mine}) == 4  # four ranks, four sets of paths
    assert paths(2, train_paths=2) == mine[2]  # seeded by (seed, epoch, batch, rank): no state to save
    assert paths(2, train_paths=2, rank_paths="shared") == mine[0]
