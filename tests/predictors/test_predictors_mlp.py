"""The MLP's soft interface: exact at one-hot points, with useful gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.predictors import create_predictor
from hwnas.space import get_space
from tests.predictors.conftest import additive_latency, distinct_archs


@pytest.fixture(scope="module")
def tiny_mlp():
    sp = get_space("tiny")
    archs = distinct_archs(sp, 200, seed=3)
    y, _ = additive_latency(sp, archs)
    return sp, create_predictor("mlp", sp, epochs=40, hidden=(32, 32)).fit(archs, y), archs


def _one_hot(sp, arch, requires_grad=False):
    return [torch.nn.functional.one_hot(torch.tensor(i), len(d.choices)).double().requires_grad_(requires_grad)
            for i, d in zip(sp.indices(arch), sp.decisions)]


def test_one_hot_probs_reproduce_predict(tiny_mlp):
    sp, p, archs = tiny_mlp
    assert p.differentiable
    preds = p.predict(archs[:20])
    for a, want in zip(archs[:20], preds):
        got = float(p.expected_latency_torch(_one_hot(sp, a)))
        assert got == pytest.approx(want, rel=1e-4)


def test_gradient_is_nonzero_and_points_to_cheaper_choices(tiny_mlp):
    sp, p, _ = tiny_mlp
    heavy = sp.parse("k5_e6_se-k5_e6_se-k5_e6_se-k5_e6_se-k5_e6_se-k5_e6_se")
    probs = _one_hot(sp, heavy, requires_grad=True)
    lat = p.expected_latency_torch(probs)
    lat.backward()
    grads = [q.grad for q in probs]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # moving probability mass from the heavy choice to the cheapest one lowers the latency
    d = 2
    cheap = sp.decisions[d].index("k3_e2_w0.5")
    heavy_i = sp.decisions[d].index("k5_e6_se")
    assert grads[d][cheap] < grads[d][heavy_i]
    with torch.no_grad():
        moved = [q.detach().clone() for q in probs]
        moved[d][heavy_i], moved[d][cheap] = 0.5, 0.5
        assert float(p.expected_latency_torch(moved)) < float(lat)
    # no gradient accumulates in the predictor's own weights
    assert all(w.grad is None for net in p.nets_ for w in net.parameters())


def test_ensemble_of_mlps_is_differentiable(tiny_mlp):
    sp, _, archs = tiny_mlp
    y, _ = additive_latency(sp, archs)
    e = create_predictor("ensemble", sp, member="mlp", n_members=2,
                         member_params={"epochs": 10, "hidden": (16,), "n_seeds": 1}).fit(archs, y)
    assert e.differentiable
    a = archs[0]
    assert float(e.expected_latency_torch(_one_hot(sp, a))) == pytest.approx(e.predict([a])[0], rel=1e-4)
    mean, std = e.predict_spread(archs[:5])
    np.testing.assert_allclose(mean, e.predict(archs[:5]))
    assert np.all(std > 0)


def test_training_is_seeded(tiny_mlp):
    sp, p, archs = tiny_mlp
    y, _ = additive_latency(sp, archs)
    q = create_predictor("mlp", sp, epochs=40, hidden=(32, 32)).fit(archs, y)
    np.testing.assert_array_equal(q.predict(archs[:10]), p.predict(archs[:10]))
    r = create_predictor("mlp", sp, epochs=40, hidden=(32, 32), seed=1).fit(archs, y)
    assert not np.array_equal(r.predict(archs[:10]), p.predict(archs[:10]))


def test_shipped_tiny_predictor_loads_and_says_which_cpu():
    from pathlib import Path

    from hwnas.predictors import load_predictor

    path = Path(__file__).resolve().parents[2] / "data" / "predictors" / "tiny_cpu.hwp"
    p = load_predictor(path, space="tiny")
    assert p.name == "mlp" and p.differentiable and p.n_train_ >= 400
    assert p.device_id and p.device_name and p.fingerprint["cpu_model"]
    assert set(p.metrics_["heldout"]) >= {"within_10", "kendall_tau", "rmse_ms"}
    sp = p.space
    a = sp.sample(11)
    assert float(p.expected_latency_torch(_one_hot(sp, a))) == pytest.approx(p.predict([a])[0], rel=1e-4)
