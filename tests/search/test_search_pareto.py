"""Pareto fronts, several budgets from one supernet, tail-latency budgets, and exporting any pick."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas import predictors as preds
from hwnas.errors import SearchError
from hwnas.search import SearchConfig, run_search
from hwnas.search.pareto import Point, front, pick
from tests.cli_exit import cli_exit_code
from tests.search.conftest import synthetic_latency as _synthetic_latency
from tests.search.test_search_loop import _micro_config


def test_front_is_non_dominated_and_sorted():
    rng = np.random.default_rng(0)
    pts = [Point(f"a{i}", float(c), float(a), 0.0, 0) for i, (c, a) in enumerate(rng.random((200, 2)))]
    fr = front(pts)
    assert [p.cost for p in fr] == sorted(p.cost for p in fr)
    assert all(b.acc > a.acc for a, b in zip(fr, fr[1:]))
    for p in fr:  # nothing is both no more expensive and more accurate
        assert not any(q.cost <= p.cost and q.acc > p.acc for q in pts)
    for q in pts:  # and every point off the front is dominated by one on it
        if q not in fr:
            assert any(p.cost <= q.cost and p.acc >= q.acc for p in fr)
    best = pick(pts, 0.5)
    assert best.cost <= 0.5 and best.acc == max(p.acc for p in pts if p.cost <= 0.5)
    assert pick(pts, -1.0) is None


@pytest.fixture(scope="module")
def micro_pred(tmp_path_factory, micro_space):
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(micro_space.sample(rng) for _ in range(300)))
    p = preds.create_predictor("ridge", space=micro_space).fit(archs, _synthetic_latency(micro_space, archs))
    path = tmp_path_factory.mktemp("pred") / "micro.hwp"
    p.save(path)
    lat = p.predict([micro_space.sample(rng) for _ in range(300)])
    return path, p, np.quantile(lat, [0.3, 0.5, 0.8])


def test_several_budgets_from_one_supernet_and_export_any(tmp_path, micro_space, micro_pred):
    path, p, budgets = micro_pred
    out = tmp_path / "multi"
    cfg = _micro_config(tmp_path, "multi", strategy="fpnas", latency_budget_ms=float(budgets[0]),
                        budgets=tuple(float(b) for b in budgets), predictor=str(path), force=True)
    res = run_search(cfg)
    par = json.loads((out / "pareto.json").read_text())
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert par["cost_kind"] == "latency" and res.pareto_front == len(par["front"]) >= 1
    fr = par["front"]
    assert all(b["cost"] > a["cost"] and b["acc"] > a["acc"] for a, b in zip(fr, fr[1:]))
    assert [b["budget"] for b in res.per_budget] == pytest.approx(sorted(budgets))
    for b in res.per_budget:
        assert b["arch"] is not None and b["cost"] <= b["budget"] + 1e-12  # every pick meets its budget
        assert b["cost"] == pytest.approx(float(p.predict([micro_space.parse(b["arch"])])[0]), rel=1e-6)
    assert res.per_budget[0]["arch"] == res.arch  # the tightest budget's pick is the search's own
    # the looser picks are the most accurate candidates under their budgets, so on or under the front
    for b in res.per_budget[1:]:
        assert b["acc"] == max(q["acc"] for q in fr if q["cost"] <= b["budget"])
    # export the middle budget's pick and the front's cheapest arch
    assert cli_exit_code(("export", "--run", str(out), "--budget", f"{budgets[1]}ms", "--epochs", "0", "--limit", "60",
                "--runs", "5", "--out", str(tmp_path / "mid.onnx"), "--json")) == 0
    card = json.loads((tmp_path / "mid.json").read_text())
    assert card["arch"] == res.per_budget[1]["arch"]
    assert cli_exit_code(("export", "--run", str(out), "--pareto-index", "0", "--epochs", "0", "--limit", "60",
                "--runs", "5", "--out", str(tmp_path / "cheap.onnx"), "--json")) == 0
    assert json.loads((tmp_path / "cheap.json").read_text())["arch"] == fr[0]["arch"]
    assert cli_exit_code(("export", "--run", str(out), "--pareto-index", str(len(fr)), "--epochs", "0",
                "--out", str(tmp_path / "x.onnx"))) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_tail_budget_uses_the_predictors_quantile(tmp_path, micro_space, micro_pred):
    path, p, budgets = micro_pred
    b = float(budgets[1])
    res = run_search(_micro_config(tmp_path, "tail", strategy="parsec", latency_budget_ms=b, budget_quantile=0.9,
                                   predictor=str(path), force=True))
    factor = float(np.exp(np.quantile(p.residuals_, 0.9)))
    assert factor > 1.0
    median = float(p.predict([micro_space.parse(res.arch)])[0])
    assert res.predicted_latency_ms == pytest.approx(median, rel=1e-6)  # reported: the median prediction
    assert median * factor <= b + 1e-12  # what the budget bound: the 90% quantile
    assert res.per_budget[0]["cost"] == pytest.approx(median * factor, rel=1e-6)
    with pytest.raises(SearchError, match="budget_quantile must be in"):
        SearchConfig(space="micro", latency_budget_ms=b, predictor=str(path), budget_quantile=1.5)
    with pytest.raises(SearchError, match="applies to a latency budget"):
        SearchConfig(space="micro", flops_budget=1e6, budget_quantile=0.9)


def test_cli_latency_budgets(tmp_path, micro_space, micro_pred, capsys):
    path, _, budgets = micro_pred
    spec = ",".join(f"{b:.6f}" for b in budgets[::-1]) + "ms"  # unsorted, unit on the last only
    code = cli_exit_code(("search", "--space", "micro", "--strategy", "parsec", "--latency-budgets", spec, "--predictor",
                str(path), "--force", "--epochs", "2", "--limit", "120", "--samples", "2", "--batch-size", "32",
                "--out", str(tmp_path / "cli"), "--json"))
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out)
    assert res["latency_budget_ms"] == pytest.approx(min(budgets), rel=1e-5)
    assert [b["budget"] for b in res["per_budget"]] == pytest.approx(sorted(budgets), rel=1e-5)
    assert cli_exit_code(("search", "--space", "micro", "--latency-budgets", "0.1", "--latency-budget", "0.1",
                "--predictor", str(path), "--out", str(tmp_path / "bad"))) == 2
