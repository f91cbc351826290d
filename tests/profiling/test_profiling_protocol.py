"""One protocol outside campaigns: the reference a final check is scaled by, and drift warnings."""
from __future__ import annotations

import dataclasses
import logging
import sys

import pytest

from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.canary import build_canary
from hwnas.profiling.fingerprint import device_fingerprint
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.protocol import (check_predictor_device, device_drift, measure_model, reference_for,
                                      warn_if_drifted)

FAST = dict(warmup=1, runs=5, calibration_sessions=2, calibration_gap_s=0.0)


@pytest.fixture
def data_fp(store, micro_space):
    """The fingerprint a predictor trained on a paired campaign of this machine carries."""
    run_campaign(store, CampaignConfig(space="micro", num_archs=3, **FAST))
    return store.dataset("micro").fingerprint


def test_same_machine_uses_the_datas_reference(data_fp, micro_space):
    canary = build_canary("micro")
    ref = reference_for(canary, data_fp)
    assert ref.source == "predictor" and ref.reference_ms == data_fp["canary"]["reference_ms"]
    arch = arch_to_onnx(micro_space, micro_space.sample(3)).SerializeToString()
    m = measure_model(arch, canary, ref, warmup=1, runs=10, sessions=3, gap_s=0.0)
    assert len(m.session_ratios) == 3 and m.ratio == sorted(m.session_ratios)[1]  # the median session
    assert m.latency_ms == pytest.approx(m.ratio * ref.reference_ms)
    d = m.to_dict()
    assert d["median_ms"] == m.latency_ms and d["p10_ms"] <= d["latency_ms"] <= d["p90_ms"]
    assert m.speed_factor > 0 and m.reference_source == "predictor"
    if sys.platform.startswith("linux"):  # the steal over the sessions, from /proc/stat
        assert 0 <= m.steal_share < 1 and d["steal_share"] == m.steal_share


def test_another_machine_is_calibrated_here_with_a_side_by_side_warning(data_fp, micro_space, caplog):
    # another model of the same name, whichever this host is
    other = {**data_fp, "cpu_model_number": data_fp["cpu_model_number"] + 16,
             "cpu_flags": sorted(set(data_fp["cpu_flags"]) ^ {"avx512f"})}
    canary = build_canary("micro")
    with caplog.at_level(logging.WARNING):
        ref = reference_for(canary, other)
    assert ref.source == "calibrated here"
    assert "another device" in caplog.text and "cpu_model_number" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert check_predictor_device(other) is None
    assert "another device" in caplog.text
    # a reference measured on another canary graph is never applied
    with pytest.raises(Exception, match="another canary graph"):
        measure_model(canary.onnx, canary, dataclasses.replace(ref, sha256="0" * 64))


def test_drift_check_measures_the_canary_against_the_stored_reference(data_fp, caplog):
    factor = device_drift(data_fp)
    assert factor is not None and factor > 0
    assert device_drift({**data_fp, "canary": None}) is None  # nothing to compare with
    assert device_drift({**data_fp, "cpu_family": 23}) is None  # another machine: not a drift question
    caplog.clear()  # the measured factor above may itself warn on a loaded machine
    with caplog.at_level(logging.WARNING):
        assert warn_if_drifted(1.25, 0.4) is True
        assert warn_if_drifted(1.05, 0.4) is False
    assert caplog.text.count("re-profile or recalibrate") == 1 and "1.25x its reference" in caplog.text


def test_a_predictor_without_a_device_is_not_checked():
    assert check_predictor_device(None) is None
    assert check_predictor_device({"imported": True, "name": "x"}) is None
    assert device_fingerprint()["protocol"] == "canary"
