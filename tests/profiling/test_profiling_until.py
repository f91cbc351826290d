"""``hwnas profile --until``: parsing, the learning-curve forecast, rounds, resume, the CLI."""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

from hwnas.cli.main import main
from hwnas.errors import ProfilingError
from hwnas.profiling.campaign import CampaignConfig, StopFlag, run_campaign
from hwnas.profiling.until import fit_learning_curve, parse_until, run_until

FAST = dict(warmup=1, runs=3, calibration_sessions=2, calibration_gap_s=0.0)
CLI_FAST = ("--warmup", "1", "--runs", "3", "--calibration-sessions", "2", "--calibration-gap", "0")
UNREACHABLE = "mape=0.0001"  # a 0.01% mean error: the measurements' own noise is far larger


def _rows(db):
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT arch FROM latency ORDER BY id")]


@pytest.mark.parametrize("spec, metric, target", [("within10=0.95", "within10", 0.95), ("within5=1", "within5", 1.0),
                                                  ("tau=0.9", "tau", 0.9), ("mape=0.05", "mape", 0.05),
                                                  (" TAU = 0.5", "tau", 0.5)])
def test_parse_until_good(spec, metric, target):
    t = parse_until(spec)
    assert (t.metric, t.target) == (metric, target)
    assert t.higher_is_better == (metric != "mape")


@pytest.mark.parametrize("spec, msg", [("accuracy=0.9", "METRIC one of"), ("within10", "METRIC one of"),
                                       ("within10=abc", "not a number"), ("within10=1.5", "fractions"),
                                       ("within10=95", "fractions"), ("tau=0", "0 < TARGET <= 1"),
                                       ("within5=-0.1", "0 < TARGET <= 1"), ("mape=0", "TARGET > 0"),
                                       ("within10=nan", "not finite")])
def test_parse_until_bad(spec, msg):
    with pytest.raises(ProfilingError, match=msg) as e:
        parse_until(spec)
    assert "within10, within5, tau, mape" in str(e.value) and "\n" not in str(e.value)


def test_forecast_of_a_power_law_that_reaches_the_target():
    n = np.array([100, 200, 300, 400, 500])
    err = 2.0 * n ** -0.5 + 0.02  # truth: error 0.05 at (2 / 0.03)^2 = 4444 archs
    f = fit_learning_curve(n, err)
    assert f.c == pytest.approx(0.02, abs=2e-3) and f.b == pytest.approx(0.5, abs=0.02)
    assert f.needed(0.05) == pytest.approx(4444, rel=0.05)
    noisy = err * (1 + 0.01 * np.random.default_rng(0).standard_normal(len(n)))
    assert fit_learning_curve(n, noisy).needed(0.05) == pytest.approx(4444, rel=0.5)


def test_forecast_of_a_curve_that_levels_off_above_the_target():
    n = np.array([50, 100, 150, 200])
    f = fit_learning_curve(n, 0.5 * n ** -0.7 + 0.2)  # floor 0.2: within10 never above ~0.8
    assert f.c == pytest.approx(0.2, abs=0.01)
    assert math.isinf(f.needed(0.05))
    assert fit_learning_curve(n[:2], [0.3, 0.2]) is None  # fewer than 3 rounds: no forecast
    flat = fit_learning_curve(n, [0.3, 0.31, 0.29, 0.3])  # no improvement at all
    assert math.isinf(flat.needed(0.1)) and 0.25 < flat.c <= 0.31


def test_out_of_reach_messages_say_why():
    from hwnas.profiling.until import CurveFit, UntilResult, UntilRound

    t = parse_until("within10=0.95")
    floor = UntilResult(t, "xgb", 2000, rounds=[UntilRound(300, 0.86, 100)], stopped="out_of_reach",
                        forecast=CurveFit(1.0, 0.5, 0.12), measured_total=300)
    assert floor.message.startswith("target out of reach: the learning curve levels off at within10 ~ 0.88 "
                                    "(asymptote), 300 archs measured")
    assert floor.to_dict()["forecast"]["needed"] is None and not floor.to_dict()["reached"]
    slow = UntilResult(t, "xgb", 100, rounds=[UntilRound(300, 0.86, 100)], stopped="out_of_reach",
                       forecast=CurveFit(2.0, 0.2, 0.0), measured_total=300)
    assert "needs ~" in slow.message and "more than 4x --max-archs 100" in slow.message
    assert slow.to_dict()["forecast"]["needed"] == slow.needed > 400


def test_until_reached_stops_with_a_db_of_distinct_archs(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    main(["profile", "--space", "micro", "-n", "12", "--db", str(db), *CLI_FAST, "--until", "tau=0.1",
          "--max-archs", "40", "--until-model", "ridge", "--json"])
    out = json.loads(capsys.readouterr().out)
    u = out["until"]
    assert u["stopped"] == "reached" and u["reached"] and u["model"] == "ridge" and u["metric"] == "tau"
    assert len(u["rounds"]) >= 1 and u["rounds"][-1]["value"] >= 0.1
    archs = _rows(db)
    assert len(archs) == u["rounds"][-1]["n"] == out["measured"] == 12 * len(u["rounds"]) <= 40
    assert len(set(archs)) == len(archs)
    assert u["message"].startswith(f"target reached at {len(archs)} archs")
    main(["profile", "--space", "micro", "-n", "12", "--db", str(db), *CLI_FAST, "--until", "tau=0.1",
          "--max-archs", "40", "--until-model", "ridge", "--json"])  # again: the stored archs already do
    again = json.loads(capsys.readouterr().out)
    assert again["measured"] == 0 and again["until"]["stopped"] == "reached" and _rows(db) == archs
    assert again["until"]["rounds"] == [{"n": len(archs), "value": u["rounds"][-1]["value"], "new": 0}]


def test_until_unreachable_stops_out_of_reach(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    main(["profile", "--space", "micro", "-n", "10", "--db", str(db), *CLI_FAST, "--until", UNREACHABLE,
          "--max-archs", "100", "--until-model", "ridge", "--json"])  # returns: exit code 0
    u = json.loads(capsys.readouterr().out)["until"]
    assert u["stopped"] == "out_of_reach" and not u["reached"]
    assert [r["n"] for r in u["rounds"]] == [10, 20, 30, 40, 50]  # giving up needs 5 judged rounds
    f = u["forecast"]
    assert f["needed"] is None or f["needed"] > 4 * 100
    assert u["message"].startswith("target out of reach: the learning curve ") and "mape ~" in u["message"]
    assert "50 archs measured" in u["message"]
    assert len(set(_rows(db))) == len(_rows(db)) == 50


def test_until_stops_at_max_archs_with_a_smaller_last_round(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    main(["profile", "--space", "micro", "-n", "10", "--db", str(db), *CLI_FAST, "--until", UNREACHABLE,
          "--max-archs", "15", "--until-model", "ridge"])
    text = capsys.readouterr().out
    assert "round 1: 10 archs (10 new), mape = " in text and "round 2: 15 archs (5 new)" in text
    assert "target not reached: --max-archs 15 measured (15), mape = " in text
    assert len(set(_rows(db))) == len(_rows(db)) == 15


def test_killed_until_run_resumes_its_round_without_duplicates(micro_space, store):
    """A kill in the last, smaller round: the same settings finish that round, then stop."""
    cfg = CampaignConfig(space="micro", num_archs=6, **FAST)
    target = parse_until(UNREACHABLE)
    stop, seen = StopFlag(), []

    def killed_in_round_3(c):
        seen.append(c.num_archs)
        if len(seen) < 3:
            return run_campaign(store, c)

        def interrupt(row, res):
            stop.stop = True  # what Ctrl-C does; a kill -9 leaves the same state (committed rows)

        return run_campaign(store, c, on_row=interrupt, stop=stop)

    first = run_until(store, cfg, target, model="ridge", max_archs=16, run_round=killed_in_round_3)
    assert first.stopped == "interrupted" and seen == [6, 6, 4] and len(store.rows("micro")) == 13
    again = run_until(store, cfg, target, model="ridge", max_archs=16)
    assert again.campaigns[0].resumed and again.campaigns[0].campaign_id == first.campaigns[-1].campaign_id
    assert [r.new for r in again.rounds] == [0, 3]  # judged what was stored, then finished the round
    assert again.stopped == "max_archs" and again.measured_total == 16
    archs = [r["arch"] for r in store.rows("micro")]
    assert len(archs) == len(set(archs)) == 16


@pytest.mark.parametrize("args, msg", [(["--until", "accuracy=0.9"], "within10, within5, tau, mape"),
                                       (["--until", "within10=1.5"], "within10, within5, tau, mape"),
                                       (["--until", "tau=0.9", "--until-model", "nope"], "unknown predictor"),
                                       (["--until", "tau=0.9", "--max-archs", "0"], "--max-archs must be >= 1"),
                                       (["--max-archs", "50"], "only apply with --until")])
def test_bad_until_is_exit_2_and_creates_no_db(micro_space, tmp_path, capsys, args, msg):
    db = tmp_path / "lat.db"
    with pytest.raises(SystemExit) as e:
        main(["profile", "--space", "micro", "-n", "4", "--db", str(db), *CLI_FAST, *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err, err
    assert not db.exists()
