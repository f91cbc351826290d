"""Metrics on hand-computed cases; active selection picks what the model is unsure of."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas.errors import DataError, PredictorError
from hwnas.predictors import create_predictor, regression_metrics, select_uncertain, uncertainty
from tests.predictors.conftest import make_params


def test_metrics_hand_computed():
    t = [1.0, 2.0, 4.0, 10.0]
    p = [1.04, 2.3, 3.84, 10.0]  # relative errors 4%, 15%, 4%, 0%
    m = regression_metrics(t, p)
    assert m["rmse_ms"] == pytest.approx(math.sqrt((0.04 ** 2 + 0.3 ** 2 + 0.16 ** 2) / 4))
    assert m["mape"] == pytest.approx((0.04 + 0.15 + 0.04 + 0.0) / 4)
    assert m["within_5"] == 0.75 and m["within_10"] == 0.75
    assert m["kendall_tau"] == pytest.approx(1.0) and m["spearman_rho"] == pytest.approx(1.0)
    # one swapped pair out of six: tau = (5 - 1) / 6
    m = regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m["kendall_tau"] == pytest.approx(4 / 6)
    assert m["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_metrics_undefined_and_bad_input():
    assert math.isnan(regression_metrics([1.0, 2.0], [1.5, 1.5])["kendall_tau"])
    with pytest.raises(DataError, match="3 values but y_pred has 2"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(DataError, match="zero"):
        regression_metrics([], [])
    with pytest.raises(DataError, match="> 0"):
        regression_metrics([1.0, 0.0], [1.0, 1.0])


def test_select_uncertain_with_std_model(micro_data):
    d = micro_data
    sp, train = d["space"], d["archs"][:40]
    rf = create_predictor("rf", sp, **make_params("rf", d)).fit(train, d["y"][:40])
    pool = d["archs"][40:]
    picked = select_uncertain(rf, pool + pool[:5], 10)
    assert len(picked) == 10 and len(set(picked)) == 10 and set(picked) <= set(pool)
    u = uncertainty(rf, pool)
    ranked = [pool[i] for i in np.argsort(-u, kind="stable")[:10]]
    assert picked == ranked
    assert u[[pool.index(a) for a in picked]].min() >= np.median(u)
    assert select_uncertain(rf, pool, 0) == [] and len(select_uncertain(rf, pool[:3], 10)) == 3
    with pytest.raises(PredictorError, match="k must be >= 0"):
        select_uncertain(rf, pool, -1)


def test_select_uncertain_committee_for_models_without_std(micro_data):
    d = micro_data
    sp = d["space"]
    ridge = create_predictor("ridge", sp).fit(d["archs"][:40], d["y"][:40])
    assert not ridge.has_spread
    with pytest.raises(PredictorError, match="no members"):
        ridge.predict_spread(d["archs"][:2])
    pool = d["archs"][40:120]
    picked = select_uncertain(ridge, pool, 8, seed=0)
    assert picked == select_uncertain(ridge, pool, 8, seed=0)  # seeded
    u = uncertainty(ridge, pool, seed=0)
    assert u.max() > 0 and u[[pool.index(a) for a in picked]].min() >= np.quantile(u, 0.85)
