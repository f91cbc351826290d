"""Fixtures of the search tests: a small latency predictor of the ``micro`` space."""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.cost import arch_cost


def synthetic_latency(space, archs):
    """A made-up but structured device: FLOPs-driven plus a per-layer overhead."""
    return np.array([0.2 + arch_cost(space, a).flops / 2e6 + 0.05 * sum(t != "skip" for t in a.tokens)
                     for a in archs])


@pytest.fixture(scope="session")
def micro_predictor(tmp_path_factory, micro_space):
    preds = pytest.importorskip("hwnas.predictors")
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(micro_space.sample(rng) for _ in range(300)))
    lat = synthetic_latency(micro_space, archs)
    p = preds.create_predictor("mlp", space=micro_space, epochs=60, seed=0).fit(archs, lat)
    path = tmp_path_factory.mktemp("pred") / "micro.hwp"
    p.save(path)
    return path, p


@pytest.fixture(scope="session")
def micro_latency_budget(micro_space, micro_predictor) -> float:
    """A latency budget that binds on micro: the 30% quantile of 200 random archs' predictions."""
    _, p = micro_predictor
    rng = np.random.default_rng(1)
    return float(np.quantile(p.predict([micro_space.sample(rng) for _ in range(200)]), 0.3))
