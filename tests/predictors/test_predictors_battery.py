"""One battery of checks run over every registered predictor (scikit-learn / Optuna style)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.errors import ArchError, PredictorError, RegistryError
from hwnas.predictors import create_predictor, list_predictors, load_predictor, regression_metrics
from hwnas.space import get_space
from tests.predictors.conftest import make_params

ALL = list_predictors()
FINGERPRINT = {"cpu_model": "Test CPU", "cpu_count": 2, "machine": "x86_64", "gpu_name": None,
               "gpu_driver": None, "ort_version": "1.0", "ep": "cpu", "ep_options": {}, "threads": 1,
               "batch_size": 1, "precision": "fp32", "device_id": "aaaaaaaaaaaa"}
# held-out share within +-10% that each model must reach on the additive test data
# (a constant predictor reaches about 0.3 there, see test_the_test_data_is_not_trivial)
MIN_WITHIN_10 = {"lut": 0.95, "ridge": 0.9, "mlp": 0.9, "ensemble": 0.9, "xgb": 0.9, "gbr": 0.9, "rf": 0.9,
                 "additive": 0.9, "hybrid": 0.9, "adapted": 0.9}


def test_builtins_registered():
    assert {"mlp", "xgb", "gbr", "rf", "ridge", "lut", "ensemble", "additive", "hybrid", "adapted"} <= set(ALL)


@pytest.fixture(scope="module")
def fitted(micro_data):
    d, out = micro_data, {}
    for name in ALL:
        p = create_predictor(name, d["space"], **make_params(name, d))
        assert p.fit(d["archs"][d["train"]], d["y"][d["train"]]) is p
        p.fingerprint, p.device_id = dict(FINGERPRINT), FINGERPRINT["device_id"]
        out[name] = p
    return out


def test_the_test_data_is_not_trivial(micro_data):
    d = micro_data
    const = np.full(60, np.median(d["y"][d["train"]]))
    assert regression_metrics(d["y"][d["test"]], const)["within_10"] < 0.5


@pytest.mark.parametrize("name", ALL)
def test_unfitted_predict_raises(name, micro_data):
    p = create_predictor(name, micro_data["space"], **make_params(name, micro_data))
    with pytest.raises(PredictorError, match="not fitted"):
        p.predict(micro_data["archs"][:2])
    with pytest.raises(PredictorError, match="not fitted"):
        p.save("unused.hwp")


@pytest.mark.parametrize("name", ALL)
def test_fit_predict_shapes_and_accuracy(name, fitted, micro_data):
    d, p = micro_data, fitted[name]
    test_archs = d["archs"][d["test"]]
    pred = p.predict(test_archs)
    assert pred.shape == (60,) and pred.dtype == np.float64 and np.all(np.isfinite(pred))
    assert p.predict([]).shape == (0,)
    # strings, Arch objects and index arrays give the same numbers
    as_str = p.predict([str(a) for a in test_archs[:5]])
    as_idx = p.predict(np.array([d["space"].indices(a) for a in test_archs[:5]]))
    np.testing.assert_allclose(as_str, pred[:5])
    np.testing.assert_allclose(as_idx, pred[:5])
    m = regression_metrics(d["y"][d["test"]], pred)
    assert m["within_10"] >= MIN_WITHIN_10[name], m
    assert m["kendall_tau"] > 0.8, m
    assert p.n_train_ == 180
    assert p.describe()["fitted"] and p.describe()["model"] == name


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(name, fitted, micro_data, tmp_path):
    d, p = micro_data, fitted[name]
    p.metrics_ = {"heldout": {"within_10": 0.5}}
    path = tmp_path / f"{name}.hwp"
    p.save(path)
    q = load_predictor(path, space=d["space"], fingerprint=dict(FINGERPRINT))
    np.testing.assert_array_equal(q.predict(d["archs"]), p.predict(d["archs"]))
    assert (q.name, q.space_name, q.n_train_, q.device_id) == (name, "micro", 180, FINGERPRINT["device_id"])
    assert q.fingerprint == FINGERPRINT and q.metrics_["heldout"]["within_10"] == 0.5
    assert json.dumps(q.get_params(), sort_keys=True) == json.dumps(p.get_params(), sort_keys=True)
    for a, b in zip(q.predict_with_std(d["archs"][:10]), p.predict_with_std(d["archs"][:10])):
        np.testing.assert_array_equal(a, b)
    if p.has_spread:
        for a, b in zip(q.predict_spread(d["archs"][:10]), p.predict_spread(d["archs"][:10])):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_load_refuses_other_space_and_device(name, fitted, micro_data, tmp_path):
    p = fitted[name]
    path = tmp_path / "p.hwp"
    p.save(path)
    with pytest.raises(PredictorError, match="--force"):
        load_predictor(path, space=get_space("tiny"))
    other = dict(FINGERPRINT, cpu_model="Other CPU", device_id="bbbbbbbbbbbb")
    with pytest.raises(PredictorError, match="cpu_model.*--force"):
        load_predictor(path, space=micro_data["space"], fingerprint=other)
    forced = load_predictor(path, space=micro_data["space"], fingerprint=other, force=True)
    np.testing.assert_array_equal(forced.predict(micro_data["archs"][:3]), p.predict(micro_data["archs"][:3]))
    # a CSV-trained comparison knows only the device id: that is checked too
    with pytest.raises(PredictorError, match="device id"):
        load_predictor(path, fingerprint={"device_id": "cccccccccccc"})


@pytest.mark.parametrize("name", ALL)
def test_rejects_archs_of_another_space(name, fitted):
    tiny = get_space("tiny")
    with pytest.raises(ArchError):
        fitted[name].predict([tiny.sample(0)])
    with pytest.raises(ArchError):
        fitted[name].predict([str(tiny.sample(0))])


def test_registry_errors():
    with pytest.raises(RegistryError, match="unknown predictor 'nope'; valid: .*mlp"):
        create_predictor("nope", "tiny")
    from hwnas.predictors import register_predictor
    from hwnas.predictors._mlp import MLPPredictor

    with pytest.raises(RegistryError, match="already registered"):
        register_predictor("mlp", MLPPredictor)
    with pytest.raises(PredictorError, match="no parameter.*epoch.*valid"):
        create_predictor("mlp", "tiny", epoch=3)
