"""``hwnas export --top-k K``: a real tiny search run, its K best candidates trained as Ray
tasks on a local 2-CPU cluster and in-process, carded, summarised and one picked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hwnas.errors import ExportError
from hwnas.export import ExportConfig
from hwnas.export_candidates import pick_best, run_candidates, top_candidates
from hwnas.export_topk import SUMMARY_NAME, export_top_k
from tests.cli_exit import cli_exit_code

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# every candidate's export: one epoch on 120 digits, a few timed runs, no pauses
FAST = dict(epochs=1, limit=120, batch_size=40, train_threads=1, latency_runs=3, latency_warmup=1,
            latency_repeats=1, latency_gap_s=0.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished ``hwnas search`` run (space tiny, digits, a FLOPs budget) in a few seconds."""
    from hwnas.search import SearchConfig, run_search

    out = tmp_path_factory.mktemp("search") / "run"
    run_search(SearchConfig(space="tiny", dataset="digits", limit=120, batch_size=32, val_batch_size=32, epochs=2,
                            warmup_epochs=1, samples_per_step=2, seed=0, out=str(out), threads=1,
                            flops_budget=7.2e6))
    return out


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _check_outputs(res, run_dir, k, backend):
    s = json.loads(Path(res.summary_path).read_text())
    assert s == json.loads(json.dumps(res.summary)) and s["backend"] == backend and s["top_k"] == k
    cands = s["candidates"]
    assert [c["rank"] for c in cands] == list(range(k)) and all(c["status"] == "ok" for c in cands)
    # ranked by supernet accuracy, every one meeting the run's budget by prediction
    run = json.loads((run_dir / "result.json").read_text())
    assert [c["supernet_acc"] for c in cands] == sorted((c["supernet_acc"] for c in cands), reverse=True)
    assert all(c["predicted_cost"] <= run["flops_budget"] == c["budget"] for c in cands)
    for c, r in zip(cands, res.results):
        folder = Path(res.out_dir) / c["dir"]
        assert c["dir"].startswith(f"cand-{c['rank']}-") and folder.is_dir()
        card = json.loads((folder / "model.json").read_text())
        assert (folder / "model.onnx").read_bytes()[:2] and card["arch"] == c["arch"] == r.arch
        assert card["accuracy"] == pytest.approx(c["accuracy"]) and card["config"]["out"] == str(folder / "model.onnx")
        assert card["run"] == str(run_dir) and card["flops_budget"] == run["flops_budget"]
        assert c["meets_budget"] == (c["flops"] <= run["flops_budget"]) and c["measured_latency_ms"] > 0
    # the pick: the most accurate trained candidate that meets the budget
    ok = [c for c in cands if c["meets_budget"]]
    assert s["picked"] is not None and cands[s["picked"]]["meets_budget"]
    assert cands[s["picked"]]["accuracy"] == max(c["accuracy"] for c in ok)
    assert s["picked_dir"] == cands[s["picked"]]["dir"] and Path(s["picked_onnx"]).is_file()
    return s


def test_top_k_on_ray_then_in_process(run_dir, cluster, tmp_path):
    t0 = time.perf_counter()
    res = export_top_k(ExportConfig(out=tmp_path / "ray", run_dir=run_dir, **FAST), 2, ray_address="auto")
    s = _check_outputs(res, run_dir, 2, "ray")
    assert s["ray"]["task_resources"] == {"num_cpus": 1}
    workers = [c["worker"] for c in s["candidates"]]
    node = cluster.get_runtime_context().get_node_id()
    assert all(w["node_id"] == node and w["pid"] != os.getpid() and w["resources"]["CPU"] == 1.0 for w in workers)
    t_ray = time.perf_counter() - t0

    seq = export_top_k(ExportConfig(out=tmp_path / "local", run_dir=run_dir, **FAST), 2)
    s2 = _check_outputs(seq, run_dir, 2, "local")
    # the same candidates, folders and (one training thread, same seed) the same trained models
    assert [c["dir"] for c in s2["candidates"]] == [c["dir"] for c in s["candidates"]]
    assert [c["accuracy"] for c in s2["candidates"]] == [c["accuracy"] for c in s["candidates"]]
    assert s2["picked_arch"] == s["picked_arch"] or {c["accuracy"] for c in s["candidates"]} == {
        s["candidates"][s["picked"]]["accuracy"]}  # only a tie broken by measured latency may differ
    print(f"ray top-2 {t_ray:.1f} s, in-process top-2 {time.perf_counter() - t0 - t_ray:.1f} s")


def test_cli_top_k_json_and_bad_input(run_dir, cluster, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["export", "--run", str(run_dir), "--epochs", "0", "--limit", "120", "--runs", "2", "--train-threads", "1",
            "--out", str(out)]
    assert cli_exit_code(args + ["--top-k", "1", "--ray", "auto", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["backend"] == "ray" and len(s["candidates"]) == 1 and (out / SUMMARY_NAME).is_file()
    n = s["available"]
    for bad, msg in ((["--top-k", "0"], "--top-k must be an integer >= 1, got 0"),
                     (["--top-k", str(n + 1)], f"{n} available"),
                     (["--top-k", "1", "--ray", "auto", "--ray-resource", "no_such_gpu"],
                      "no worker of the Ray cluster advertises the resource 'no_such_gpu'")):
        target = tmp_path / f"bad{len(bad)}"
        assert cli_exit_code(args[:-1] + [str(target)] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1, err
        assert not target.exists()  # nothing written


def test_unreachable_ray_address_fails_fast(run_dir, tmp_path):
    """In a fresh process (no Ray yet): a closed port is refused at once, not retried for minutes."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "hwnas.cli", "export", "--run", str(run_dir), "--top-k", "1",
                        "--ray", "127.0.0.1:1", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "no Ray cluster answers at '127.0.0.1:1'" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    assert time.perf_counter() - t0 < 30


def test_selection_rules(tmp_path):
    """Candidates from a run's per-budget picks or its front; the pick among trained ones."""
    front = [{"arch": a, "cost": c, "acc": acc, "loss": 0.0, "sampled": 0}
             for a, c, acc in (("a", 1.0, 0.5), ("b", 2.0, 0.6), ("c", 3.0, 0.7), ("d", 4.0, 0.8))]
    budgets = [{"budget": 1.5, "arch": "a", "cost": 1.0, "acc": 0.5}, {"budget": 2.5, "arch": "b", "cost": 2.0, "acc": 0.6},
               {"budget": 2.8, "arch": "b", "cost": 2.0, "acc": 0.6}, {"budget": 0.5, "arch": None, "cost": None, "acc": None}]
    (tmp_path / "pareto.json").write_text(json.dumps({"cost_kind": "latency", "front": front, "budgets": budgets[:1]}))
    single = {"space": "tiny", "arch": "a", "latency_budget_ms": 3.5, "per_budget": budgets[:1]}
    cs = run_candidates(single, tmp_path)
    assert cs.source == "pareto" and [c.arch for c in cs.candidates] == ["c", "b", "a"]
    assert [c.pareto_index for c in cs.candidates] == [2, 1, 0] and {c.budget for c in cs.candidates} == {3.5}
    assert [c.arch for c in run_candidates(single, tmp_path, latency_budget_ms=9.0).candidates] == ["d", "c", "b", "a"]
    multi = dict(single, per_budget=budgets)
    cs = run_candidates(multi, tmp_path)
    assert cs.source == "per_budget" and [(c.arch, c.budget) for c in cs.candidates] == [("b", 2.5), ("a", 1.5)]
    assert cs.candidates[0].export_overrides() == {"budget": 2.5}
    with pytest.raises(ExportError, match=r"--top-k 3 asks for more candidates than the run has: 2 available"):
        top_candidates(multi, tmp_path, 3)
    with pytest.raises(ExportError, match=r"--top-k must be an integer >= 1, got -1"):
        top_candidates(multi, tmp_path, -1)

    def rec(rank, acc, meets, ms=1.0, status="ok"):
        return {"rank": rank, "accuracy": acc, "meets_budget": meets, "measured_latency_ms": ms, "status": status}

    assert pick_best([rec(0, 0.9, False), rec(1, 0.8, True), rec(2, 0.7, True)])[0] == 1
    assert pick_best([rec(0, 0.8, True, 2.0), rec(1, 0.8, True, 1.0)])[0] == 1  # tie: the faster one
    assert pick_best([rec(0, 0.9, False), rec(1, 0.8, False)]) == (None, "none of the 2 trained candidate(s) meets its budget")
    assert pick_best([rec(0, 0.7, None), rec(1, 0.8, None)])[0] == 1
    assert pick_best([rec(0, None, None, status="error")])[0] is None
