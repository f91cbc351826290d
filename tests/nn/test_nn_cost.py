"""The analytic cost model agrees with torch's own counters on every space."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.cost import arch_cost, cost_extremes
from hwnas.nn import build_model
from hwnas.space import get_space
from tests.conftest import ALL_SPACES


def _torch_counts(model, resolution):
    x = torch.zeros(1, 3, resolution, resolution)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() / 2, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL_SPACES)
def test_flops_and_params_match_torch_within_1pct(name):
    sp = get_space(name)
    rng = np.random.default_rng(7)
    for _ in range(3):
        arch = sp.sample(rng)
        res = min(sp.resolutions) if not sp.searchable_resolution else None
        cost = arch_cost(sp, arch, res)
        model = build_model(sp, arch, res)
        flops, params = _torch_counts(model, sp.resolution(arch, res))
        assert cost.params == params, str(arch)
        # our convention counts only convs and the classifier; torch's counter adds the
        # few element-wise products SE/split-attention make, so allow the stated 1%
        assert cost.flops == pytest.approx(flops, rel=0.01), str(arch)


def test_micro_space_cost_matches(micro_space):
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = micro_space.sample(rng)
        cost = arch_cost(micro_space, arch, 16)
        flops, params = _torch_counts(build_model(micro_space, arch, 16), 16)
        assert (cost.flops, cost.params) == (pytest.approx(flops, rel=0.01), params)


def test_cost_extremes_bound_random_samples(micro_space):
    (fmin, amin), (fmax, amax) = cost_extremes(micro_space, "flops")
    assert arch_cost(micro_space, amin).flops == fmin
    assert arch_cost(micro_space, amax).flops == fmax
    every = [arch_cost(micro_space, micro_space.from_indices(i)).flops for i in np.ndindex(
        *(len(d.choices) for d in micro_space.decisions))]
    assert (min(every), max(every)) == (fmin, fmax)


def test_fbnet_skip_projection_is_documented_cheapest():
    sp = get_space("fbnet")
    tokens = ["k3_e1"] * 22
    tokens[1] = "skip"  # first layer of stage 24x4 s2: shape changes -> 1x1 conv projection
    with_skip = arch_cost(sp, "-".join(tokens))
    tokens[1] = "k3_e1"
    plain = arch_cost(sp, "-".join(tokens))
    assert 0 < with_skip.layers[1].flops < plain.layers[1].flops
