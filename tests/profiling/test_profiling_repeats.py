"""Repeated, time-spread sessions per arch: the lowest session median is stored."""
from __future__ import annotations

import json

import pytest

from hwnas.cli.main import main
from hwnas.errors import ProfilingError
from hwnas.profiling.campaign import CampaignConfig, StopFlag, campaign_device, measure_arch, run_campaign
from hwnas.profiling.fingerprint import device_fingerprint
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.runner import measure
from hwnas.profiling.store import LatencyStore

FAST = dict(warmup=1, runs=3, canary=False)  # the plain protocol's repeats


def _extra(row):
    return json.loads(row["extra"])


def test_measure_repeats_keeps_every_session_and_the_lowest(micro_space):
    model = arch_to_onnx(micro_space, micro_space.sample(0)).SerializeToString()
    m = measure(model, warmup=1, runs=5, repeats=4)
    assert m.repeats == 4 and len(m.session_medians_ms) == 4
    assert m.median_ms == min(m.session_medians_ms)
    assert m.p10_ms <= m.median_ms <= m.p90_ms and m.runs == 5  # statistics of the chosen session
    one = measure(model, warmup=1, runs=5)
    assert one.repeats == 1 and one.session_medians_ms is None
    with pytest.raises(ProfilingError, match="need repeats >= 1 and gap_s >= 0, got repeats=0"):
        measure(model, repeats=0)


def test_campaign_stores_min_of_session_medians(store, micro_space):
    cfg = CampaignConfig(space="micro", num_archs=5, repeats=3, chunk=2, **FAST)
    res = run_campaign(store, cfg)
    assert (res.measured, res.errors) == (5, 0)
    rows = store.rows("micro")
    assert len(rows) == 5
    for r in rows:
        ex = _extra(r)
        meds = ex["session_medians_ms"]
        assert ex["repeats"] == 3 and len(meds) == 3
        assert r["median_ms"] == pytest.approx(min(meds), abs=1e-6)
        assert meds[ex["chosen_session"]] == pytest.approx(r["median_ms"], abs=1e-6)
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["runs"] == 3
        # cost columns are totals over the 3 sessions: at least 3 x 3 timed runs of the chosen median's order
        assert r["timed_total_ms"] >= 3 * min(meds) * 0.5
    ds = store.dataset("micro")
    assert sorted(ds.latency_ms) == sorted(r["median_ms"] for r in rows)


def test_repeats_enter_the_fingerprint_but_one_keeps_old_ids():
    one, three = device_fingerprint(threads=1), device_fingerprint(threads=1, repeats=3)
    assert three["repeats"] == 3 and three["device_id"] != one["device_id"]
    old = {k: v for k, v in one.items() if k != "repeats"}  # a fingerprint stored before repeats existed
    from hwnas.profiling.fingerprint import device_id

    assert device_id(old) == one["device_id"]
    cfg = CampaignConfig(space="tiny", num_archs=1, repeats=3)
    assert campaign_device(cfg)["device_id"] == three["device_id"]


def test_protocols_are_separate_devices_in_one_store(store, micro_space):
    run_campaign(store, CampaignConfig(space="micro", num_archs=2, repeats=1, **FAST))
    run_campaign(store, CampaignConfig(space="micro", num_archs=2, repeats=2, **FAST))
    assert len(store.devices()) == 2
    with pytest.raises(Exception, match="2 devices"):
        store.dataset("micro")


def test_stop_mid_chunk_then_resume_with_repeats(store, micro_space):
    cfg = CampaignConfig(space="micro", num_archs=6, repeats=3, chunk=4, **FAST)
    stop = StopFlag()
    seen = []

    def interrupt(row, res):
        seen.append(row["arch"])
        stop.stop = True  # what the SIGINT handler does

    r1 = run_campaign(store, cfg, on_row=interrupt, stop=stop)
    assert r1.interrupted and r1.measured == 1  # the rest of the chunk had not all its sessions: no row
    before = store.rows("micro")
    r2 = run_campaign(store, cfg)
    assert r2.resumed and r2.skipped == 1 and r2.measured == 5
    after = store.rows("micro")
    assert len(after) == 6 and len({r["arch"] for r in after}) == 6
    assert after[:1] == before
    assert all(len(_extra(r)["session_medians_ms"]) == 3 for r in after)


def test_measure_arch_back_to_back_for_ray(micro_space):
    row = measure_arch("micro", str(micro_space.sample(1)),
                       CampaignConfig(space="micro", num_archs=1, repeats=2, **FAST))
    assert row["status"] == "ok" and len(row["extra"]["session_medians_ms"]) == 2
    assert row["median_ms"] == pytest.approx(min(row["extra"]["session_medians_ms"]), abs=1e-6)


@pytest.mark.parametrize("opt", ["--repeats", "--chunk"])
def test_cli_rejects_repeats_or_chunk_below_one(micro_space, tmp_path, capsys, opt):
    with pytest.raises(SystemExit) as e:
        main(["profile", "--space", "micro", "-n", "1", "--db", str(tmp_path / "x.db"), opt, "0"])
    assert e.value.code == 2
    assert opt in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_cli_repeats_option(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    main(["profile", "--space", "micro", "-n", "2", "--db", str(db), "--warmup", "1", "--runs", "3",
          "--repeats", "2", "--chunk", "1", "--calibration-sessions", "2", "--calibration-gap", "0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["measured"] == 2
    with LatencyStore(db) as s:
        rows = s.rows("micro")
        assert [len(_extra(r)["session_medians_ms"]) for r in rows] == [2, 2]
        (dev,) = s.devices()
        assert s.fingerprint(dev["id"])["repeats"] == 2
