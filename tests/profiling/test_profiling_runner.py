"""The ORT runner on the CPU for real, and honest GPU-provider failures."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from hwnas.errors import ProfilingError
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.providers import unavailable_reason
from hwnas.profiling.runner import measure
from hwnas.profiling.stats import summarize

no_gpu = pytest.mark.skipif(unavailable_reason("cuda") is None, reason="CUDA EP works here")


@pytest.fixture(scope="module")
def model(micro_space):
    return arch_to_onnx(micro_space, micro_space.sample(0))


def test_cpu_measurement_is_real(model, tmp_path):
    m = measure(model, warmup=2, runs=7)
    assert m.runs == 7 and m.warmup == 2 and m.ep == m.ep_used == "cpu" and not m.fallback
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.timed_total_ms == pytest.approx(m.mean_ms * 7, rel=1e-6)
    assert m.session_ms > 0 and m.first_run_ms > 0 and m.engine_build_ms is None
    assert 0 < m.cpu_median_ms <= 1.05 * m.p90_ms  # CPU time of the computing thread <= wall time
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert measure(str(path), warmup=0, runs=3).runs == 3  # a path works too
    assert set(m.to_dict()) >= {"median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "ep_used", "fallback"}


def test_time_budget_runs_until_spent(model):
    m = measure(model, warmup=1, runs=None, time_budget_s=0.02)
    assert m.timed_total_ms >= 20.0 and m.runs >= 5


def test_bad_arguments(model):
    with pytest.raises(ProfilingError, match="unknown execution provider 'tpu'.*valid: cpu, cuda, tensorrt"):
        measure(model, ep="tpu")
    with pytest.raises(ProfilingError, match="runs must be >= 1"):
        measure(model, runs=0)
    with pytest.raises(ProfilingError, match="fixed batch of 1, but batch_size=4"):
        measure(model, runs=1, batch_size=4)
    with pytest.raises(ProfilingError, match="cannot read ONNX file"):
        measure("/nonexistent/model.onnx")


@no_gpu
@pytest.mark.parametrize("ep", ["cuda", "tensorrt"])
def test_gpu_ep_without_gpu_is_an_error_naming_the_reason(model, ep):
    with pytest.raises(ProfilingError, match=f"execution provider '{ep}' is not usable: .*(cannot|no )"):
        measure(model, ep=ep, runs=2)


@no_gpu
def test_fallback_is_recorded_and_warned(model, caplog):
    with caplog.at_level(logging.WARNING):
        m = measure(model, ep="cuda", allow_fallback=True, warmup=1, runs=3)
    assert m.ep == "cuda" and m.ep_used == "cpu" and m.fallback and m.fallback_reason
    assert any("FALLING BACK" in r.message and r.levelno == logging.WARNING for r in caplog.records)


def test_summarize_matches_numpy():
    t = np.array([3.0, 1.0, 2.0, 10.0, 4.0])
    s = summarize(t)
    assert (s.median_ms, s.mean_ms, s.runs) == (3.0, 4.0, 5)
    assert s.std_ms == pytest.approx(np.std(t, ddof=1))
    assert s.p10_ms == pytest.approx(np.percentile(t, 10)) and s.p90_ms == pytest.approx(np.percentile(t, 90))
    with pytest.raises(ProfilingError):
        summarize([])
    with pytest.raises(ProfilingError):
        summarize([1.0, float("nan")])
