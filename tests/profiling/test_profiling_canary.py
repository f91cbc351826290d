"""The canary protocol: paired timing, calibration once per device, recalibration, migration."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from hwnas.errors import ProfilingError
from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.canary import build_canary, calibrate, default_canary_arch
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.paired import PairedTimer, cache_context_ratios
from hwnas.profiling.stats import ratio_estimates
from hwnas.profiling.store import SCHEMA_VERSION, LatencyStore
from hwnas.space import get_space

FAST = dict(warmup=1, runs=5, calibration_sessions=2, calibration_gap_s=0.0)


def test_default_canary_is_the_seeded_median_flops_arch(micro_space):
    from hwnas.cost import arch_cost

    arch = default_canary_arch(micro_space)
    assert arch == default_canary_arch(micro_space)  # deterministic: every machine picks the same one
    rng = np.random.default_rng(0)
    flops = sorted(arch_cost(micro_space, a).flops for a in (micro_space.sample(rng) for _ in range(101)))
    assert arch_cost(micro_space, micro_space.parse(arch)).flops == flops[50]
    c1, c2 = build_canary("micro"), build_canary("micro")
    assert c1.arch == arch and c1.sha256 == c2.sha256 and len(c1.sha256) == 64


def test_bad_canary_is_one_clear_error(micro_space):
    with pytest.raises(ProfilingError, match="--canary 'k9_e9' is not an arch of space 'micro'"):
        build_canary("micro", arch="k9_e9")


def test_ratio_estimates_cancel_a_shared_speed_factor():
    rng = np.random.default_rng(0)
    speed = np.where(np.arange(60) < 30, 1.0, 1.6)  # the machine slows down half-way
    arch = 2.0 * speed * (1 + 0.01 * rng.standard_normal(60))
    canary = 1.0 * speed * (1 + 0.01 * rng.standard_normal(60))
    est = ratio_estimates(arch, canary)
    assert est["median_of_ratios"] == pytest.approx(2.0, rel=0.01)
    assert est["trimmed_mean_of_ratios"] == pytest.approx(2.0, rel=0.01)
    # an unpaired median sees the phase mix; the paired ratio does not
    assert abs(np.median(arch) / 2.0 - 1) > 0.1
    with pytest.raises(ProfilingError, match="as many canary runs"):
        ratio_estimates([1.0, 2.0], [1.0])


def test_paired_timer_times_an_arch_against_itself_at_ratio_one(micro_space):
    canary = build_canary("micro")
    timer = PairedTimer(canary.onnx, warmup=2)
    m = timer.measure(canary.onnx, runs=40)
    assert m.pairs == 40 and m.arch.runs == 40
    assert m.ratio == pytest.approx(1.0, abs=0.25)  # the same graph: the ratio is 1 up to noise
    # a graph with far more work: tiny's heaviest arch (micro's largest was within noise of the
    # canary on an AVX-512 host, where these 16x16 graphs are bound by per-op overhead: 0.98 vs 1.01)
    tiny = get_space("tiny")
    bigger = arch_to_onnx(tiny, tiny.parse("-".join(["k5_e6_se"] * 6))).SerializeToString()
    assert timer.measure(bigger, runs=40).ratio > 2 * m.ratio
    assert set(m.estimates) == {"median_of_ratios", "ratio_of_medians", "trimmed_mean_of_ratios",
                                "warm_median_of_ratios", "cold_median_of_ratios"}


def test_cache_context_ratios_pair_each_warm_run_with_its_warm_neighbour():
    # PairedTimer's order a0 c0 | c1 a1 | a2 c2 | c3 a3 | a4 c4: a2, a4 follow an arch run and
    # c1, c3 a canary run (warm); a1, a3 follow a canary run and c2, c4 an arch run (cold)
    arch = [9.0, 3.0, 2.0, 3.3, 2.2]
    canary = [9.0, 1.0, 1.5, 1.1, 1.5]
    est = cache_context_ratios(arch, canary)
    assert est["warm_median_of_ratios"] == pytest.approx(np.median([2.0 / 1.0, 2.2 / 1.1]))
    assert est["cold_median_of_ratios"] == pytest.approx(np.median([3.0 / 1.5, 3.3 / 1.5]))
    assert cache_context_ratios(arch[:3], canary[:3]) == {}  # one warm pair is not an estimate


def _largest(space):
    from hwnas.cost import arch_cost

    rng = np.random.default_rng(1)
    return str(max((space.sample(rng) for _ in range(50)), key=lambda a: arch_cost(space, a).flops))


def test_calibration_is_a_low_quantile_of_spread_sessions(micro_space):
    canary = build_canary("micro")
    seen = []
    ref = calibrate(canary, sessions=4, runs=10, gap_s=0.0, warmup=1, on_session=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(ref.session_medians_ms) == 4
    assert min(ref.session_medians_ms) <= ref.reference_ms <= float(np.median(ref.session_medians_ms))


def test_paired_campaign_stores_ratio_times_reference_and_the_raw_numbers(store, micro_space):
    res = run_campaign(store, CampaignConfig(space="micro", num_archs=4, **FAST))
    assert res.measured == 4 and res.canary["arch"] == default_canary_arch(micro_space)
    (canary,) = store.canaries()
    rows = store.rows("micro")
    for r in rows:
        assert r["calibrated"] == 1 and r["canary_id"] == canary["id"]
        assert r["latency_ms"] == pytest.approx(r["ratio"] * canary["reference_ms"], rel=1e-12)
        assert r["median_ms"] > 0 and r["canary_median_ms"] > 0  # raw numbers kept beside it
        extra = json.loads(r["extra"])
        assert extra["pairs"] == 5 and set(extra["estimates"]) >= {"median_of_ratios", "ratio_of_medians"}
    ds = store.dataset("micro")
    assert ds.calibrated == 4 and ds.fingerprint["canary"]["reference_ms"] == canary["reference_ms"]
    assert np.allclose(ds.latency_ms, [r["latency_ms"] for r in rows])
    assert store.fingerprint(res.device_id)["protocol"] == "canary"


def test_second_campaign_reuses_the_reference_and_refuses_another_canary(store, micro_space):
    run_campaign(store, CampaignConfig(space="micro", num_archs=2, **FAST))
    before = store.canaries()
    run_campaign(store, CampaignConfig(space="micro", num_archs=2, **FAST))
    assert store.canaries() == before  # calibrated once, reused
    other = _largest(micro_space)
    with pytest.raises(ProfilingError, match="already measures micro against canary"):
        run_campaign(store, CampaignConfig(space="micro", num_archs=1, canary_arch=other, **FAST))
    assert len(store.rows("micro")) == 4 and store.canaries() == before  # nothing stored changed
    with pytest.raises(ProfilingError, match="contradict"):
        run_campaign(store, CampaignConfig(space="micro", num_archs=1, canary=False, canary_arch=other))


def test_plain_and_paired_are_different_devices(store, micro_space):
    a = run_campaign(store, CampaignConfig(space="micro", num_archs=2, **FAST))
    b = run_campaign(store, CampaignConfig(space="micro", num_archs=2, canary=False, repeats=1, warmup=1, runs=3))
    assert a.device_id != b.device_id
    assert store.fingerprint(b.device_id)["protocol"] == "plain"
    plain = store.rows("micro", b.device_id)
    assert all(r["calibrated"] == 0 and r["latency_ms"] == r["median_ms"] for r in plain)


def test_recalibrate_rescales_rows_from_their_ratios_and_keeps_history(store, micro_space):
    from hwnas.profiling.canary import CanaryReference

    run_campaign(store, CampaignConfig(space="micro", num_archs=3, **FAST))
    (c,) = store.canaries()
    before = {r["arch"]: r for r in store.rows("micro")}
    new = CanaryReference(c["reference_ms"] * 2, "test", (c["reference_ms"] * 2,), 0.0, "now")
    assert store.recalibrate_canary(c["id"], new) == 3
    (c2,) = store.canaries()
    assert c2["reference_ms"] == pytest.approx(2 * c["reference_ms"]) and len(c2["history"]) == 1
    for r in store.rows("micro"):
        old = before[r["arch"]]
        assert r["latency_ms"] == pytest.approx(2 * old["latency_ms"])
        assert (r["median_ms"], r["ratio"], r["canary_median_ms"]) == (old["median_ms"], old["ratio"],
                                                                        old["canary_median_ms"])


def _schema1_db(path):
    """A store as schema 1 wrote it: no canary columns, no canaries table."""
    from hwnas.profiling import store as st

    old = st._SCHEMA.replace(
        "    latency_ms REAL, ratio REAL, canary_median_ms REAL, canary_id INTEGER REFERENCES canaries(id),\n"
        "    calibrated INTEGER NOT NULL DEFAULT 0,\n", "")
    assert old != st._SCHEMA
    c = sqlite3.connect(path)
    c.executescript(old + f"PRAGMA user_version=1; PRAGMA application_id={st._APP_ID};")
    c.execute("INSERT INTO devices VALUES ('dev1', 'old box', '{\"cpu_model\": \"X\", \"ep\": \"cpu\"}', 'then')")
    c.execute("INSERT INTO latency (device_id, space, arch, batch, resolution, precision, ep, status, median_ms, "
              "created) VALUES ('dev1', 'micro', 'a', 1, 16, 'fp32', 'cpu', 'ok', 0.5, 'then')")
    c.commit()
    c.close()


def test_schema1_store_is_migrated_in_place_as_uncalibrated(tmp_path, caplog):
    db = tmp_path / "old.db"
    _schema1_db(db)
    with LatencyStore(db) as s:
        (row,) = s.rows()
        assert row["latency_ms"] == 0.5 and row["calibrated"] == 0 and row["median_ms"] == 0.5
        assert s.canaries() == []
        assert s.devices()[0]["lacks"]  # the old fingerprint is labelled with what it lacks
    assert "marked uncalibrated" in caplog.text
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_stored_canary_whose_graph_changed_is_refused(store, micro_space):
    from hwnas.profiling.canary import rebuild_stored

    run_campaign(store, CampaignConfig(space="micro", num_archs=1, **FAST))
    (c,) = store.canaries()
    assert rebuild_stored(c).sha256 == c["sha256"]
    with pytest.raises(ProfilingError, match="builds to another ONNX graph"):
        rebuild_stored({**c, "sha256": "0" * 64})
