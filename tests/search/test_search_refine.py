"""``--refine``: real measurements of the region near the budget correct the predictor before the final pick."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas import predictors as preds
from hwnas.distributed import World
from hwnas.errors import SearchError
from hwnas.search import SearchConfig, run_search
from hwnas.search.pareto import Point
from hwnas.search.refine import REGION_SLACK, region
from hwnas.search.run_setup import setup
from tests.cli_exit import cli_exit_code
from tests.search.conftest import synthetic_latency
from tests.search.test_search_loop import _micro_config


@pytest.fixture(scope="module")
def synthetic_pred(tmp_path_factory, micro_space):
    """A predictor of a made-up device (tens of times slower than this machine runs micro):
    what refinement must correct from a handful of real measurements."""
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(micro_space.sample(rng) for _ in range(300)))
    p = preds.create_predictor("ridge", space=micro_space).fit(archs, synthetic_latency(micro_space, archs))
    path = tmp_path_factory.mktemp("pred") / "micro.hwp"
    p.save(path)
    budget = float(np.quantile(p.predict([micro_space.sample(rng) for _ in range(300)]), 0.8))
    return path, p, budget


def test_region_is_the_most_accurate_near_the_budget_without_the_pick():
    pts = [Point("a", 0.9, 0.9, 0, 0), Point("b", 1.1, 0.95, 0, 0), Point("c", 1.2, 0.99, 0, 0),
           Point("d", 0.5, 0.5, 0, 0), Point("e", 0.4, 0.9, 0, 0)]
    assert 1.1 <= 1.0 * (1 + REGION_SLACK) < 1.2
    # c is beyond the slack; a and e tie on accuracy, the cheaper first; the pick (d) is left out
    assert region(pts, 1.0, 3, exclude="d") == ["b", "e", "a"]
    assert region(pts, 1.0, 10, exclude="a") == ["b", "e", "d"]


def test_refine_measures_the_region_and_picks_by_the_adapted_predictor(tmp_path, micro_space, synthetic_pred):
    path, base, budget = synthetic_pred
    res = run_search(_micro_config(tmp_path, "ref", strategy="fpnas", latency_budget_ms=budget, refine=6,
                                   predictor=str(path), force=True))
    f = res.refine
    measured = f["measured"]
    archs = [m["arch"] for m in measured]
    assert 3 <= len(archs) <= 6 and len(set(archs)) == len(archs) and f["base_final"] not in archs
    for m in measured:  # each region arch: its base prediction near or under the budget, and a real time
        assert m["base_ms"] == pytest.approx(float(base.predict([micro_space.parse(m["arch"])])[0]), rel=1e-6)
        assert m["base_ms"] <= budget * (1 + REGION_SLACK) + 1e-12 and m["measured_ms"] > 0
    y = np.array([m["measured_ms"] for m in measured])
    base_err = np.abs(np.array([m["base_ms"] for m in measured]) / y - 1)
    assert np.median(base_err) > 1.0  # the made-up device is far from this machine ...
    assert f["loo"]["mape"] < 0.5 * float(base_err.mean())  # ... and the adapted one is not, held out
    # the run's latency costs are the adapted predictor's: its pick's prediction sits at this
    # machine's scale, not the base's, and meets the budget by it
    base_final_ms = float(base.predict([micro_space.parse(res.arch)])[0])
    assert f["base_final_ms"] == pytest.approx(float(base.predict([micro_space.parse(f["base_final"])])[0]))
    assert res.predicted_latency_ms < 0.5 * base_final_ms
    assert 0.3 * y.min() < res.predicted_latency_ms < 3 * y.max()
    assert res.per_budget[0]["cost"] == pytest.approx(res.predicted_latency_ms) and res.predicted_latency_ms <= budget
    assert f["final_in_fit"] == (res.arch in archs)
    saved = json.loads((tmp_path / "ref" / "result.json").read_text())["refine"]
    assert saved["measured"] == list(measured) and saved["base_final"] == f["base_final"]
    pareto = json.loads((tmp_path / "ref" / "pareto.json").read_text())
    assert max(p["cost"] for p in pareto["front"]) < 3 * y.max()  # the front is re-costed too


def test_refine_bad_input_is_one_clear_error(tmp_path, synthetic_pred):
    path, _, budget = synthetic_pred
    for bad in (-1, True, 2.5):
        with pytest.raises(SearchError, match="refine must be an integer >= 0"):
            SearchConfig(space="micro", latency_budget_ms=budget, predictor=str(path), refine=bad)
    with pytest.raises(SearchError, match="refine measures candidates near a latency budget"):
        SearchConfig(space="micro", flops_budget=1e6, refine=4)
    assert cli_exit_code(("search", "--space", "micro", "--flops-budget", "1M", "--refine", "4",
                          "--out", str(tmp_path / "bad"))) == 2
    assert not (tmp_path / "bad").exists()
    # several ranks would not agree on what rank 0 alone measured: refused before any file or data
    cfg = SearchConfig(space="micro", latency_budget_ms=budget, predictor=str(path), force=True, refine=4,
                       out=str(tmp_path / "ddp"))
    with pytest.raises(SearchError, match="--refine times candidates in one process; this run has 2 ranks"):
        setup(cfg, tmp_path / "ddp", World(rank=0, size=2))
    assert not (tmp_path / "ddp").exists()
