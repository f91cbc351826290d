"""Encodings agree with the analytic cost model and with their soft (torch) versions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.cost import arch_cost
from hwnas.errors import ArchError, PredictorError
from hwnas.predictors import Encoding, parse_encoding
from hwnas.space import get_space


@pytest.mark.parametrize("space_name", ["tiny", "fbnet", "fbnetv2"])
def test_cost_features_equal_arch_cost(space_name):
    sp = get_space(space_name)
    enc = Encoding(sp, "layercost+totals")
    archs = [sp.sample(i) for i in range(30)]
    x = enc.encode(archs)
    n = len(sp.layers)
    for row, a in zip(x, archs):
        c = arch_cost(sp, a)
        np.testing.assert_allclose(row[:n], [l.flops * 1e-6 for l in c.layers])
        np.testing.assert_allclose(row[n:2 * n], [l.traffic * 1e-6 for l in c.layers])
        np.testing.assert_allclose(row[2 * n:2 * n + 3], [c.flops * 1e-6, c.params * 1e-6, c.activations * 1e-6])
        assert row[-2] == sum(op.name != "skip" for op in sp.layer_ops(a))
        assert row[-1] == sp.resolution(a)


def test_onehot_and_factorized_blocks():
    sp = get_space("tiny")
    a = sp.parse("k5_e6_se-skip-k3_e2_w0.5-skip-k3_e4-k5_e2_w0.5_se")
    enc = Encoding(sp, "onehot+factorized")
    x = enc.encode([a])[0]
    names = enc.feature_names
    on = {n for n, v in zip(names, x) if v == 1.0}
    assert "layer0=k5_e6_se" in on and "layer1=skip" in on
    assert {"layer0.kernel=5", "layer0.expansion=6.0", "layer0.se=True", "layer0.width=1.0"} <= on
    # a skip choice has no kernel: all its kernel columns are zero
    assert not any(n.startswith("layer1.kernel") for n in on) and "layer1.skip=yes" in on
    assert x[: sum(len(d.choices) for d in sp.decisions)].sum() == len(sp.decisions)


@pytest.mark.parametrize("space_name", ["tiny", "fbnetv2"])
def test_soft_encoding_is_exact_at_one_hot_and_linear_in_mixtures(space_name):
    sp = get_space(space_name)
    enc = Encoding(sp, "onehot+factorized+layercost+totals")
    a, b = sp.sample(1), sp.sample(2)
    ia, ib = sp.indices(a), sp.indices(b)
    hot = [torch.nn.functional.one_hot(torch.tensor(i), len(d.choices)).double() for i, d in zip(ia, sp.decisions)]
    np.testing.assert_allclose(enc.encode_soft(hot).numpy(), enc.encode([a])[0], rtol=1e-12)
    # differing in one decision only: the soft encoding of a 50/50 mix is the mean
    k = 1 if sp.searchable_resolution else 0
    c = sp.from_indices([ib[k] if j == k else i for j, i in enumerate(ia)])
    mix = [h.clone() for h in hot]
    mix[k] = 0.5 * hot[k] + 0.5 * torch.nn.functional.one_hot(torch.tensor(ib[k]), len(hot[k])).double()
    np.testing.assert_allclose(enc.encode_soft(mix).numpy(), enc.encode([a, c]).mean(0), rtol=1e-9)


def test_encoding_spec_and_index_errors():
    assert parse_encoding("onehot+totals") == ("onehot", "totals")
    with pytest.raises(PredictorError, match="valid|from: onehot"):
        parse_encoding("onehot+magic")
    sp = get_space("tiny")
    enc = Encoding(sp, "onehot")
    with pytest.raises(ArchError, match="must have 6 tokens"):
        enc.indices(["k3_e2-k3_e2"])
    with pytest.raises(ArchError, match="not a valid choice"):
        enc.indices(["k3_e2-k3_e2-k3_e2-k3_e2-k3_e2-k7_e9"])
    with pytest.raises(ArchError, match="entries below"):
        enc.indices(np.full((2, 6), 99))
    with pytest.raises(PredictorError, match="expected 6 probability vectors"):
        enc.encode_soft([torch.ones(3)])
