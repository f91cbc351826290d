"""``hwnas export --measured-pick``: candidates timed on this machine before training.

A real predictor file (for its device fingerprint), real paired measurements against the
canary; the two archs differ ~8x in latency, and the budgets sit far from both, so the
outcome does not depend on how noisy the machine is."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.errors import ExportError
from hwnas.export import ExportConfig, export_arch

BIG = "-".join(["k5_e6_se"] * 6)  # the search's pick in these runs
SMALL = "k3_e2_w0.5-skip-k3_e2_w0.5-skip-k3_e2_w0.5-skip"
MID = "k3_e2-skip-k3_e4-skip-k5_e2-skip"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(predictor path, measured ms of BIG and SMALL) on this machine, this protocol."""
    from hwnas.predictors import create_predictor
    from hwnas.profiling.canary import build_canary
    from hwnas.profiling.fingerprint import device_fingerprint
    from hwnas.profiling.onnx_graph import arch_to_onnx
    from hwnas.profiling.protocol import measure_model, reference_for
    from hwnas.space import get_space

    space = get_space("tiny")
    canary = build_canary("tiny")
    ref = reference_for(canary, None, warn=False)
    lat = {a: measure_model(arch_to_onnx(space, a).SerializeToString(), canary, ref, runs=20, gap_s=0).latency_ms
           for a in (BIG, SMALL, MID)}
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(12)] + [space.parse(a) for a in lat]
    p = create_predictor("ridge", space=space).fit(archs, np.linspace(0.1, 1.0, len(archs)))
    fp = device_fingerprint("cpu", threads=1, batch_size=1)
    p.fingerprint, p.device_id = fp, fp["device_id"]
    path = tmp_path_factory.mktemp("pred") / "tiny.hwp"
    p.save(path)
    assert lat[BIG] > 3 * lat[SMALL], lat  # what the budgets below rely on
    return path, lat


def _run(tmp_path, predictor, budget, front=((SMALL, 0.2, 0.5), (MID, 0.3, 0.6), (BIG, 0.9, 0.8))):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({
        "space": "tiny", "arch": BIG, "resolution": 32, "dataset": "digits", "seed": 0, "predictor": str(predictor),
        "latency_budget_ms": budget, "predicted_latency_ms": 0.9 * budget if budget else None,
        "supernet_val_acc": 0.8}))
    (run / "pareto.json").write_text(json.dumps({"cost_kind": "latency", "budgets": [], "front": [
        {"arch": a, "cost": c * (budget or 1), "acc": acc, "loss": 1.0, "sampled": 1} for a, c, acc in front]}))
    return run


def _export(tmp_path, run, **kw):
    cfg = dict(out=tmp_path / "m.onnx", run_dir=run, epochs=0, limit=60, latency_runs=20, latency_gap_s=0.0,
               measured_pick=4)
    cfg.update(kw)
    return export_arch(ExportConfig(**cfg))


def test_a_pick_measured_over_budget_is_replaced_by_the_first_candidate_under_it(tmp_path, measured):
    path, lat = measured
    budget = (lat[BIG] * lat[SMALL]) ** 0.5  # BIG measures ~1.7x over, SMALL ~1.7x under
    res = _export(tmp_path, _run(tmp_path, path, budget, front=((SMALL, 0.2, 0.5), (BIG, 0.9, 0.8))))
    mp = res.card["search"]["measured_pick"]
    assert [m["arch"] for m in mp["measured"]] == [BIG, SMALL] and mp["chosen"] == 1
    assert mp["measured"][0]["measured_ms"] > budget >= mp["measured"][1]["measured_ms"] / (1 - mp["margin"])
    assert res.arch == SMALL and res.predicted_latency_ms == pytest.approx(0.2 * budget)  # the front's prediction
    assert res.within_budget is True


def test_candidates_are_timed_most_accurate_first_and_the_walk_stops_at_the_first_under(tmp_path, measured):
    path, lat = measured
    budget = (lat[BIG] * lat[SMALL]) ** 0.5
    # MID is the more accurate front candidate; whether it is under the budget decides the walk
    res = _export(tmp_path, _run(tmp_path, path, budget))
    mp = res.card["search"]["measured_pick"]
    names = [m["arch"] for m in mp["measured"]]
    assert names[:2] == [BIG, MID]
    assert res.arch == names[mp["chosen"]]
    assert names == ([BIG, MID] if mp["measured"][1]["measured_ms"] <= budget * 0.95 else [BIG, MID, SMALL])


def test_a_pick_under_budget_is_kept_after_one_measurement(tmp_path, measured):
    path, lat = measured
    res = _export(tmp_path, _run(tmp_path, path, 3 * lat[BIG]))
    mp = res.card["search"]["measured_pick"]
    assert len(mp["measured"]) == 1 and mp["chosen"] == 0 and "search's pick" in mp["reason"]
    assert res.arch == BIG and res.within_budget is True


def test_nothing_under_budget_ships_the_fastest_and_the_export_says_over(tmp_path, measured):
    path, lat = measured
    res = _export(tmp_path, _run(tmp_path, path, lat[SMALL] / 3))
    mp = res.card["search"]["measured_pick"]
    assert len(mp["measured"]) == 3 and "fastest" in mp["reason"]
    assert res.arch == SMALL and res.within_budget is False


@pytest.mark.parametrize("kw, msg", [
    ({"measured_pick": -1}, "integer >= 1"),
    ({"pareto_index": 0}, "drop --budget / --pareto-index"),
    ({"measured_margin": 0.7}, "--measured-margin"),
    ({"measure_latency": False}, "measure latency"),
])
def test_bad_input_is_one_clear_error_before_any_training(tmp_path, measured, kw, msg):
    run = _run(tmp_path, measured[0], 1.0)
    with pytest.raises(ExportError, match=msg):
        _export(tmp_path, run, **kw)
    assert not (tmp_path / "m.onnx").exists()


def test_a_run_without_a_budget_is_refused(tmp_path, measured):
    with pytest.raises(ExportError, match="give --latency-budget"):
        _export(tmp_path, _run(tmp_path, measured[0], None))


def test_cli_table_names_the_candidates_timed_and_bad_input_exits_2(tmp_path, measured, capsys):
    from click.testing import CliRunner

    from hwnas.cli.main import cli
    from tests.cli_exit import cli_exit_code

    path, lat = measured
    run = _run(tmp_path, path, (lat[BIG] * lat[SMALL]) ** 0.5, front=((SMALL, 0.2, 0.5), (BIG, 0.9, 0.8)))
    r = CliRunner().invoke(cli, ["export", "--run", str(run), "--epochs", "0", "--limit", "60", "--runs", "20",
                                 "--measured-pick", "3", "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert "2 candidate(s) timed before training" in r.stdout and SMALL in r.stdout
    assert cli_exit_code(["export", "--run", str(run), "--measured-pick", "2", "--pareto-index", "0",
                          "--out", str(tmp_path / "x.onnx")]) == 2
    assert "drop --budget / --pareto-index" in capsys.readouterr().err
