"""Predicted vs measured latency: a real predictor fitted on real measurements."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.export import ExportConfig, export_arch

ARCH = "k5_e3-k3_e3_w0.5-k5_e1"


@pytest.fixture(scope="module")
def predictor_file(micro_space, tmp_path_factory):
    from hwnas.predictors import create_predictor
    from hwnas.profiling.fingerprint import device_fingerprint
    from hwnas.profiling.onnx_graph import arch_to_onnx
    from hwnas.profiling.runner import measure

    rng = np.random.default_rng(0)
    archs = list({micro_space.sample(rng) for _ in range(16)})
    lat = [measure(arch_to_onnx(micro_space, a), warmup=2, runs=5).median_ms for a in archs]
    p = create_predictor("ridge", space=micro_space).fit(archs, np.array(lat))
    fp = device_fingerprint("cpu", threads=1, batch_size=1)
    p.fingerprint, p.device_id = fp, fp["device_id"]
    path = tmp_path_factory.mktemp("pred") / "micro.hwp"
    p.save(path)
    return path, float(p.predict([micro_space.parse(ARCH)])[0])


def test_explicit_predictor_predicts_and_names_its_device(micro_space, tmp_path, predictor_file):
    path, expected = predictor_file
    res = export_arch(ExportConfig(out=tmp_path / "m.onnx", space="micro", arch=ARCH, epochs=0, limit=60,
                                   latency_runs=5, latency_gap_s=0.0, predictor=path, latency_budget_ms=50.0))
    assert res.predicted_latency_ms == pytest.approx(expected, rel=1e-9) and expected > 0
    lat = res.card["latency"]
    assert lat["predictor"] == str(path) and lat["same_device_as_predictor"] is True
    assert lat["prediction_error"] == pytest.approx((expected - res.measured_latency_ms) / res.measured_latency_ms)
    assert res.within_budget is True and lat["budget_margin"] > 0


def test_run_prediction_is_kept_and_its_predictor_identified(micro_space, tmp_path, predictor_file):
    path, _ = predictor_file
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps({
        "space": "micro", "arch": ARCH, "resolution": 16, "dataset": "digits", "seed": 1,
        "predictor": str(path), "latency_budget_ms": 0.001, "predicted_latency_ms": 0.0009}))
    res = export_arch(ExportConfig(out=tmp_path / "m.onnx", run_dir=tmp_path / "run", epochs=0, limit=60,
                                   latency_runs=5, latency_gap_s=0.0))
    assert res.predicted_latency_ms == 0.0009 and res.latency_budget_ms == 0.001
    assert res.within_budget is False  # 1 us is out of reach of any CPU: reported, not hidden
    assert res.card["latency"]["predictor_device_id"] is not None
    assert res.card["dataset"]["seed"] == 1  # the search's split seed
