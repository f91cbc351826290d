"""Test data for predictors: latencies from a known additive per-layer model.

Each (layer, op, input channels) gets a latency from its analytic cost (``hwnas.cost``) plus
a seeded per-op offset; an arch's latency is a fixed overhead plus the sum over its layers,
times seeded log-normal noise.  That is honest data for fitting (a real device is roughly
additive, FBNet's LUT assumption) and it gives the LUT predictor its exact table.
"""
from __future__ import annotations

import numpy as np
import pytest

from hwnas.cost import layer_cost
from hwnas.space import plan_arch

OVERHEAD_MS = 0.02

# small but real settings so the whole battery stays fast on 2 busy cores
FAST_PARAMS = {
    "mlp": {"epochs": 40, "hidden": (32, 32)},
    "ensemble": {"n_members": 3, "member_params": {"n_estimators": 100}},
    "xgb": {"n_estimators": 150},
    "gbr": {"n_estimators": 150},
    "rf": {"n_estimators": 60},
    "ridge": {},
    "lut": {},
    "additive": {},
    "hybrid": {"residual_params": {"n_estimators": 150}},
    "adapted": {},
}


def layer_keys(space, arch):
    """(layer index, op name, input channels) and the planned layer, per searchable layer."""
    plan = plan_arch(space, arch)
    return [((i, lp.op.name, lp.in_channels), lp) for i, lp in enumerate(plan.layers)]


def additive_latency(space, archs, *, noise: float = 0.02, seed: int = 0):
    """``(latency_ms, table)``: the generating per-layer table and noisy arch latencies."""
    rng = np.random.default_rng(1234)
    offsets: dict[str, float] = {}
    table: dict[tuple[int, str, int], float] = {}
    y = []
    for arch in archs:
        total = OVERHEAD_MS
        for key, lp in layer_keys(space, arch):
            if key not in table:
                op = key[1]
                if op not in offsets:
                    offsets[op] = 0.0 if op == "skip" else float(rng.uniform(0.002, 0.01))
                c = layer_cost(lp)
                table[key] = offsets[op] + 2e-7 * c.flops + 5e-7 * c.traffic
            total += table[key]
        y.append(total)
    y = np.asarray(y) * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(y)))
    return y, table


def distinct_archs(space, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out: dict = {}
    while len(out) < n:
        a = space.sample(rng)
        out[a] = None
    return list(out)


@pytest.fixture(scope="session")
def micro_data(micro_space):
    """240 distinct micro archs: first 180 to train, last 60 held out."""
    archs = distinct_archs(micro_space, 240, seed=0)
    y, table = additive_latency(micro_space, archs)
    return {"space": micro_space, "archs": archs, "y": y, "table": table, "train": slice(0, 180),
            "test": slice(180, 240)}


def make_params(name: str, data) -> dict:
    params = dict(FAST_PARAMS.get(name, {}))
    if name == "lut":
        params["table"] = data["table"]
    if name == "adapted":
        params["base"] = other_device_base(data)
    return params


def other_device_base(data):
    """A ridge predictor of "another device": the same archs, 1.8x slower, with the slow
    archs stretched (latency^1.1), so adapting has a scale and a curvature to learn."""
    from hwnas.predictors import create_predictor

    tr = data["train"]
    y_other = 1.8 * data["y"][tr] ** 1.1
    return create_predictor("ridge", data["space"]).fit(data["archs"][tr], y_other, uncertainty=False)
