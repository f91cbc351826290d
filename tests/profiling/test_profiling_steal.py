"""CPU steal: parsing /proc/stat, the share over an interval, the campaign's report and warning."""
from __future__ import annotations

import logging
import os
import sys

import pytest

from hwnas.profiling import steal
from hwnas.profiling.campaign import CampaignConfig, CampaignResult, _check_steal, run_campaign

STAT = "cpu  2260388 11256 139897 1937249 2790 0 1984 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n"


def test_the_aggregate_cpu_lines_eighth_field_is_steal():
    assert steal.parse_steal_ticks(STAT.format(steal=28655)) == 28655
    assert steal.parse_steal_ticks("cpu  1 2 3 4 5 6 7\n") is None  # a kernel without the field
    assert steal.parse_steal_ticks("intr 1 2\n") is None


def test_share_is_steal_seconds_over_the_cpu_seconds_of_all_cpus(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(STAT.format(steal=1000))
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(steal.time, "monotonic", lambda: next(clock))
    meter = steal.StealMeter(str(stat))
    ncpu = os.cpu_count()
    stat.write_text(STAT.format(steal=1000 + int(0.5 * steal._TICKS * 10 * ncpu)))  # half of 10 s, every CPU
    assert meter.share() == pytest.approx(0.5, abs=1e-2)


def test_no_proc_stat_gives_none(tmp_path):
    assert steal.StealMeter(str(tmp_path / "missing")).share() is None


def test_a_contended_campaign_warns_and_a_quiet_one_does_not(caplog):
    res = CampaignResult(1, "dev", 10, measured=10, steal_share=steal.STEAL_WARN * 2)
    with caplog.at_level(logging.WARNING, logger="hwnas.profiling.campaign"):
        _check_steal(res)
    assert "steal" in caplog.text and f"{100 * steal.STEAL_WARN * 2:.1f}%" in caplog.text
    caplog.clear()
    res.steal_share = steal.STEAL_WARN / 2
    with caplog.at_level(logging.WARNING, logger="hwnas.profiling.campaign"):
        _check_steal(res)
    assert caplog.text == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_a_real_campaign_reports_the_steal_it_saw(store, micro_space):
    res = run_campaign(store, CampaignConfig(space="micro", num_archs=2, seed=0, warmup=1, runs=3,
                                             calibration_sessions=2, calibration_gap_s=0.0))
    assert res.measured == 2
    assert res.steal_share is not None and 0.0 <= res.steal_share < 1.0


def test_a_measured_latency_says_when_the_host_was_contended():
    assert steal.contention_note(None) == "" and steal.contention_note(steal.STEAL_WARN) == ""
    assert "5.0% CPU steal" in steal.contention_note(0.05)
