"""Campaigns: sampling, skipping stored archs, resuming, error rows, Ctrl-C."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwnas.cost import arch_cost
from hwnas.errors import ProfilingError
from hwnas.profiling.campaign import CampaignConfig, measure_arch, run_campaign
from hwnas.profiling.sampling import sample_archs
from hwnas.space import register_space, space_from_dict, unregister_space
from tests.conftest import MICRO_SPEC

FAST = dict(warmup=1, runs=3, calibration_sessions=2, calibration_gap_s=0.0)


def test_samplers_are_seeded_distinct_and_skip_excluded(micro_space):
    a = sample_archs(micro_space, 30, sampler="uniform", seed=3)
    assert a == sample_archs(micro_space, 30, sampler="uniform", seed=3)
    assert len(set(a)) == 30
    b = sample_archs(micro_space, 30, sampler="stratified", seed=3, exclude=a[:10])
    assert len(set(b)) == 30 and not set(map(str, b)) & set(map(str, a[:10]))
    with pytest.raises(ProfilingError, match="unknown sampler 'grid'.*stratified, uniform"):
        sample_archs(micro_space, 3, sampler="grid")
    with pytest.raises(ProfilingError, match="only .* unmeasured architectures"):
        sample_archs(micro_space, micro_space.size() + 1)


@pytest.mark.slow
def test_stratified_covers_the_flops_range_better_than_uniform():
    from hwnas.space import get_space

    space = get_space("fbnet")
    spread = {}
    for sampler in ("uniform", "stratified"):
        f = np.log([arch_cost(space, a).flops for a in sample_archs(space, 60, sampler=sampler, seed=0)])
        spread[sampler] = (f.max() - f.min(), f.std())
    assert spread["stratified"][0] > 1.5 * spread["uniform"][0]
    assert spread["stratified"][1] > 1.5 * spread["uniform"][1]


def test_n_then_n_more_adds_n_new(store, micro_space):
    cfg = CampaignConfig(space="micro", num_archs=4, **FAST)
    r1 = run_campaign(store, cfg)
    assert (r1.measured, r1.errors, r1.interrupted) == (4, 0, False)
    first = {r["arch"]: r["median_ms"] for r in store.rows("micro")}
    r2 = run_campaign(store, cfg)  # same command again: 4 *new* archs
    assert r2.measured == 4 and not r2.resumed
    rows = store.rows("micro")
    assert len(rows) == 8 and len({r["arch"] for r in rows}) == 8
    assert {r["arch"]: r["median_ms"] for r in rows[:4]} == first
    row = rows[0]
    for k in ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "flops", "params", "build_ms",
              "export_ms", "session_ms", "timed_total_ms"):
        assert row[k] is not None, k
    assert row["runs"] == 3 and row["warmup"] == 1 and row["status"] == "ok" and row["fallback"] == 0


def test_second_campaign_on_a_searchable_resolution_space_reuses_its_canary(store):
    """Such a space's canary is an arch at its own resolution, not the space's default one:
    a second campaign once looked for a canary at the default, found none and stopped on
    the stored one ("already has a canary")."""
    spec = dict(MICRO_SPEC, name="micro_res", resolutions=[16, 24], searchable_resolution=True)
    unregister_space("micro_res")
    register_space("micro_res", lambda: space_from_dict(dict(spec)))
    try:
        cfg = CampaignConfig(space="micro_res", num_archs=3, **FAST)
        r1 = run_campaign(store, cfg)
        r2 = run_campaign(store, dataclasses.replace(cfg, seed=1))
        assert (r1.measured, r2.measured) == (3, 3)
        assert r2.canary["arch"] == r1.canary["arch"] and len(store.canaries()) == 1
        assert len({r["arch"] for r in store.rows("micro_res")}) == 6
    finally:
        unregister_space("micro_res")


def test_ctrl_c_stops_after_current_arch_and_resumes(store, micro_space):
    from hwnas.profiling.campaign import StopFlag

    cfg = CampaignConfig(space="micro", num_archs=5, **FAST)
    stop = StopFlag()

    def interrupt(row, res):
        stop.stop = True  # what the SIGINT handler does

    r1 = run_campaign(store, cfg, on_row=interrupt, stop=stop)
    assert r1.interrupted and r1.measured == 1
    r2 = run_campaign(store, cfg)
    assert r2.resumed and r2.campaign_id == r1.campaign_id and r2.skipped == 1 and r2.measured == 4
    assert len(store.rows("micro")) == 5
    assert run_campaign(store, cfg).campaign_id != r1.campaign_id  # finished: a new one next time


def test_failed_measurement_is_an_error_row_not_a_crash(micro_space):
    row = measure_arch("micro", "not-an-arch", CampaignConfig(space="micro", num_archs=1, **FAST))
    assert row["status"] == "error" and "ArchError" in row["error"]


def test_gpu_campaign_without_gpu(store, micro_space):
    from hwnas.profiling.providers import unavailable_reason

    if unavailable_reason("cuda") is None:
        pytest.skip("CUDA EP works here")
    with pytest.raises(ProfilingError, match="'cuda' is not usable"):
        run_campaign(store, CampaignConfig(space="micro", num_archs=2, ep="cuda", **FAST))
    assert store.rows() == []
    r = run_campaign(store, CampaignConfig(space="micro", num_archs=2, ep="cuda", allow_fallback=True, **FAST))
    rows = store.rows("micro")
    assert r.measured == 2 and all(x["ep"] == "cuda" and x["ep_used"] == "cpu" and x["fallback"] == 1 for x in rows)
    assert "fallback_reason" in rows[0]["extra"]
    assert store.fingerprint(r.device_id)["ep"] == "cpu"  # the device that really ran


def test_bad_config_is_refused(store, micro_space):
    with pytest.raises(ProfilingError, match="fp16 needs --ep tensorrt"):
        run_campaign(store, CampaignConfig(space="micro", num_archs=1, precision="fp16"))
    with pytest.raises(Exception, match="resolution 17 is not allowed"):
        run_campaign(store, CampaignConfig(space="micro", num_archs=1, resolution=17))
