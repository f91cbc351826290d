"""The main job, end to end on a reduced configuration: profile -> predictor -> search -> export."""
import json
import sqlite3

import onnx
import pytest

from hwnas.cli.main import main
from hwnas.errors import HwnasError
from hwnas.pipeline import PipelineConfig, run_pipeline

SMALL = dict(num_archs=16, warmup=2, runs=5, search_epochs=2, export_epochs=1, limit=200, seed=0,
             calibration_sessions=2)


def _rows(db):
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT arch, median_ms FROM latency").fetchall())


@pytest.mark.slow
def test_demo_chain_writes_one_run_folder_and_resumes(tmp_path):
    out = tmp_path / "run"
    res = run_pipeline(PipelineConfig(out=str(out), **SMALL))
    for name in ("pipeline.json", "latency.db", "predictor.hwp", "search/result.json", "search/supernet.pt",
                 "model.onnx", "model.json", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    # the search's pick, timed here before training (and replaced when it measured over the budget)
    pick = json.loads((out / "measured_pick.json").read_text())
    timed = [m["arch"] for m in pick["measured"]]
    assert timed[0] == json.loads((out / "search/result.json").read_text())["arch"]
    assert summary["arch"] == res.arch == timed[pick["chosen"]] and summary["measured_pick"] == pick
    assert res.archs_measured == 16
    lo, hi = res.latency_range_ms
    assert lo <= res.latency_budget_ms <= hi  # the default budget lies inside the measured range
    assert res.predicted_latency_ms <= res.latency_budget_ms  # the search's pick meets it by prediction
    assert res.measured_latency_ms > 0 and res.parity_max_abs_diff < 1e-3
    # the final check is timed against the data's canary and scaled by its stored reference
    assert res.measured_reference == "predictor"
    card = json.loads((out / "model.json").read_text())
    stats = card["latency"]["stats"]
    assert stats["latency_ms"] == pytest.approx(stats["ratio"] * stats["reference_ms"])
    with sqlite3.connect(out / "latency.db") as con:
        (ref,) = con.execute("SELECT reference_ms FROM canaries").fetchone()
    assert stats["reference_ms"] == ref
    meta = {p.key: p.value for p in onnx.load(out / "model.onnx").metadata_props}
    assert meta["arch"] == res.arch
    assert set(res.stage_seconds) == {"profile", "predictor", "search", "pick", "export"}

    rows = _rows(out / "latency.db")
    with pytest.raises(HwnasError, match="--resume"):
        run_pipeline(PipelineConfig(out=str(out), **SMALL))
    with pytest.raises(HwnasError, match="num_archs=20"):
        run_pipeline(PipelineConfig(out=str(out), resume=True, **dict(SMALL, num_archs=20)))
    again = run_pipeline(PipelineConfig(out=str(out), resume=True, **SMALL))
    assert _rows(out / "latency.db") == rows  # nothing measured twice, nothing lost
    assert again.arch == res.arch


@pytest.mark.slow
def test_demo_cli_quick_uses_shipped_latencies(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder yet, and no --out given
    try:
        main(["demo", "--quick", "--adapt-archs", "8", "--search-epochs", "2", "--export-epochs", "0",
              "--limit", "200", "--latency-budget", "0.2ms", "--json"])
    except SystemExit as e:
        assert e.code == 0
    res = json.loads(capsys.readouterr().out)
    out = tmp_path / res["out"]
    assert out.parent.name == "runs" and out.name.startswith("demo-") and (out / "model.onnx").is_file()
    assert res["latency_source"].endswith("tiny_cpu.csv") and res["archs_measured"] >= 500
    assert res["latency_budget_ms"] == 0.2 and res["predicted_latency_ms"] <= 0.2
    # it says which machine the shipped data describe, and how far this one's canary is from theirs
    assert res["canary_vs_data"] > 0
    # the shipped data's predictor is adapted to this machine from 8 archs measured here
    assert len(_rows(out / "latency.db")) == 8 and res["adapted"]["archs"] == 8
    # (the names may be equal: this host can be the same CPU model as the shipped data's)
    assert res["latency_device"] == res["adapted"]["device"] and res["adapted"]["base_device"]
    assert 0 <= res["adapted"]["loo_metrics"]["within_10"] <= 1
    from hwnas.predictors import load_predictor

    assert load_predictor(out / "predictor.hwp").name == "adapted"
    assert load_predictor(out / "base_predictor.hwp").name == "mlp"
    assert res["measured_reference"] == "predictor"  # the final check uses the reference calibrated here


def test_demo_refuses_a_missing_parent_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "no" / "run")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_demo_refuses_too_few_archs_to_adapt(tmp_path):
    from hwnas.errors import SearchError

    with pytest.raises(SearchError, match="adapt_archs must be 0 .* or >= 5, got 2"):
        PipelineConfig(out=str(tmp_path / "run"), quick=True, adapt_archs=2)


@pytest.mark.slow
def test_demo_under_torchrun_trains_the_supernet_on_two_ranks(tmp_path):
    """rank 0 adapts the predictor, sets the budget and exports; both ranks train the
    supernet; one report, one run folder; a batch the ranks cannot split fails before
    anything is written."""
    from tests.torchrun import torchrun

    out = tmp_path / "run"
    args = ["-m", "hwnas", "demo", "--quick", "--adapt-archs", "5", "--search-epochs", "2", "--export-epochs", "0",
            "--limit", "200", "--latency-budget", "0.2ms"]
    proc = torchrun(2, args + ["--out", str(out), "--json"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)  # one JSON document: only rank 0 prints
    assert res["world_size"] == 2 and res["out"] == str(out)
    search = json.loads((out / "search/result.json").read_text())
    assert search["world_size"] == 2 and search["arch"] == res["arch"]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert (out / "model.onnx").is_file() and res["predicted_latency_ms"] <= 0.2
    assert len(_rows(out / "latency.db")) == 5  # measured once, by rank 0

    bad = tmp_path / "bad"
    proc = torchrun(2, args + ["--batch-size", "33", "--out", str(bad)])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: batch_size=33 is one step's batch over all 2 ranks and must be a multiple of the "
                      "world size; valid nearby: 32, 34"], proc.stderr[-2000:]
    assert proc.returncode != 0 and not bad.exists()
