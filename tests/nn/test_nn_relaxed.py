"""DMaskingNAS's relaxed supernet forward (``Supernet.forward_relaxed``, brief 3.7)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.cost import cost_extremes
from hwnas.errors import ArchError, TrainError
from hwnas.nn.relaxed import gate_dims, gates_from_flat, gumbel_gates, one_hot_gates
from hwnas.nn.supernet import Supernet, recalibrate_bn
from hwnas.profiling.onnx_graph import randomize_bn
from hwnas.search.distribution import CategoricalDistribution
from hwnas.space import get_space, make_divisible, space_from_dict
from tests.conftest import MICRO_SPEC

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(space, seed=1):
    net = Supernet(space, num_classes=5, seed=seed)
    torch.manual_seed(seed)
    randomize_bn(net)  # non-trivial gammas and running statistics
    return net


def _x(net, n=6, seed=0):
    res = 128 if net.space.name == "fbnetv2" else net.resolution  # fbnetv2: small images, resized per arch
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def _archs(space, n):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(n)]
    if space.name == "micro_proj":  # not registered: no cost model; the projection and its skip-free twin
        return archs + [space.parse("k3_e1-skip-k5_e3"), space.parse("k3_e1-skip-skip")]
    if space.name == "micro_v2":
        return archs + [space.parse("r24-k5_e3_se_sa2-k3_e1_w0.5_sa1-skip")]
    if space.name == "fbnetv2":  # the smallest resolutions only: large paths take seconds on a CPU
        archs = [space.parse("-".join((r,) + a.tokens[1:])) for r, a in zip(["r128", "r160"], archs)]
        return archs + [space.parse("r128-" + "-".join(["k5_e6_w1.25_se_sa4"] * 17))]
    return archs + [a for _, a in cost_extremes(space)]


@pytest.fixture
def spaces(micro_space, proj_space, micro_v2_space):
    return {"micro": micro_space, "proj": proj_space, "micro_v2": micro_v2_space}


@pytest.mark.parametrize("name, n", [("micro", 40), ("tiny", 12), ("proj", 12), ("micro_v2", 30), ("fbnetv2", 2)])
def test_one_hot_gates_equal_the_single_path_bit_for_bit(name, n, spaces):
    """The key test: train-mode batch statistics, eval-mode running statistics (after a
    recalibration, so they are a path's own) and plain training mode, many archs (``proj``:
    a head conv and a skip that is a 1x1 projection; ``micro_v2`` and ``fbnetv2``: SE,
    split-attention, searchable resolution, inputs resized to the arch's resolution)."""
    space = spaces.get(name) or get_space(name)
    net = _net(space)
    x = _x(net, n=2 if name == "fbnetv2" else 6)
    if name == "proj":
        assert net.plan("k3_e1-skip-k5_e3").layers[1].projection and space.head_channels
    archs = _archs(space, n)
    if space.searchable_resolution:  # some paths resize the input, some do not
        assert len({net.plan(a).resolution == x.shape[-1] for a in archs}) == 2
    for arch in archs:
        gates = one_hot_gates(space, arch)
        with torch.no_grad():
            with net.batch_stats():
                assert torch.equal(net.forward_relaxed(x, gates), net(x, arch)), str(arch)
            recalibrate_bn(net, arch, [(x, None)])
            net.eval()
            assert torch.equal(net.forward_relaxed(x, gates), net(x, arch)), str(arch)
            net.train()
    if name == "fbnetv2":
        return  # two more 55M-parameter supernets buy nothing the small spaces do not check
    # training mode moves running statistics the same way too
    arch = space.sample(3)
    net, twin = _net(space), _net(space)
    out_r, out_s = net.forward_relaxed(x, one_hot_gates(space, arch)), twin(x, arch)
    assert torch.equal(out_r, out_s)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))


@pytest.mark.parametrize("name", ["micro", "tiny", "proj", "micro_v2"])
def test_one_hot_gates_with_grad_run_the_widest_forward_and_still_match(name, spaces):
    """Gates that require grad keep every choice live (masks of exact zeros): the widest
    tensors, the same logits up to float rounding, and a gradient for unchosen values."""
    space = spaces.get(name) or get_space(name)
    net, x = _net(space), _x(_net(space))
    for arch in _archs(space, 4):
        gates = one_hot_gates(space, arch, requires_grad=True)
        with net.batch_stats():
            out = net.forward_relaxed(x, gates)
            ref = net(x, arch).detach()
        torch.testing.assert_close(out.detach(), ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-5)
        out.square().sum().backward()
        flat = torch.cat([g.grad for d in gates for g in d.values() if len(g) > 1])
        assert torch.isfinite(flat).all() and (flat != 0).any()


def test_soft_width_and_skip_gates_mix_the_paths_linearly(micro_space):
    """Where a layer is linear in its mixture (the last layer's width and skip: the output
    mask, the residual weight, the skip mix, then pool and classifier), the relaxed logits are
    exactly the gate-weighted mixture of the single paths' logits."""
    net, x = _net(micro_space), _x(_net(micro_space), n=8)
    base = "k3_e1-k5_e3_w0.5"  # layer 1 gives 8 channels: w0.5 on the last layer adds the input back
    gates = one_hot_gates(micro_space, base + "-k3_e3")
    gates[2]["skip"] = torch.tensor([0.7, 0.3])  # (no, yes)
    gates[2]["width"] = torch.tensor([0.4, 0.6])  # (0.5, 1.0)
    assert gate_dims(micro_space)[2]["skip"] == ("no", "yes") and gate_dims(micro_space)[2]["width"] == (0.5, 1.0)
    with torch.no_grad(), net.batch_stats():
        out = net.forward_relaxed(x, gates)
        ref = (0.3 * net(x, base + "-skip") + 0.7 * 0.4 * net(x, base + "-k3_e3_w0.5")
               + 0.7 * 0.6 * net(x, base + "-k3_e3"))
        assert net.plan(base + "-k3_e3_w0.5").layers[2].residual
    torch.testing.assert_close(out, ref, atol=1e-6 * float(ref.abs().max()), rtol=1e-5)


def test_soft_resolution_gates_mix_the_resolutions_logits(micro_v2_space):
    """Resolution is mixed by one relaxed forward per live resolution (not FBNetV2's
    constant-cost masking): the logits are the gate-weighted logits of each resolution."""
    space = micro_v2_space
    net, x = _net(space), _x(_net(space), n=8)
    body = "k5_e3_se_sa2-k3_e1_w0.5-k3_e3_sa1"
    gates = one_hot_gates(space, "r16-" + body)
    gates[0]["resolution"] = torch.tensor([0.25, 0.75])
    with torch.no_grad(), net.batch_stats():
        out = net.forward_relaxed(x, gates)
        ref = 0.25 * net(x, "r16-" + body) + 0.75 * net(x, "r24-" + body)
    torch.testing.assert_close(out, ref, atol=1e-6 * float(ref.abs().max()), rtol=1e-5)


@pytest.mark.parametrize("name, tau", [("tiny", 5.0), ("tiny", 0.1), ("micro_v2", 1.0)])
def test_gradients_reach_every_dimensions_logits(name, tau, spaces):
    """Gumbel-softmax gates from the factorized distribution's own parameters (tiny and
    micro_v2: every dimension of every layer changes the computation, micro_v2 adding
    resolution, block and splits): finite, non-zero gradients."""
    space = spaces.get(name) or get_space(name)
    net, x = _net(space), _x(_net(space), n=8)
    dist = CategoricalDistribution(space, factorized=True)
    logits = gates_from_flat(space, dist.params)
    gates = gumbel_gates(logits, tau, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(net.forward_relaxed(x, gates), torch.arange(8) % 5)
    loss.backward()
    searched = {k for d in logits for k, v in d.items() if len(v) > 1}
    assert {"resolution", "block", "splits"} <= searched or name == "tiny"
    layers = dict(zip(space.decisions[len(space.decisions) - len(space.layers):], space.layers))
    for d, lg in zip(space.decisions, logits):
        for dim, p in lg.items():
            if len(p) > 1:
                assert p.grad is not None and torch.isfinite(p.grad).all(), (d.name, dim)
                # micro_v2's layer0: both widths are 8 channels, nothing to choose
                widths = {make_divisible(layers[d].channels * w) for w in d.dim_values()[dim]} if dim == "width" else ()
                same = len(widths) == 1
                assert same or p.grad.abs().sum() > 0, (d.name, dim)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_gumbel_gates_are_reproducible_and_hard_gates_are_one_hot(micro_space):
    logits = [{k: torch.randn(len(v), generator=torch.Generator().manual_seed(i)) for k, v in d.items()}
              for i, d in enumerate(gate_dims(micro_space))]
    a = gumbel_gates(logits, 1.0, generator=torch.Generator().manual_seed(4))
    b = gumbel_gates(logits, 1.0, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a[i][k], b[i][k]) for i in range(len(a)) for k in a[i])
    assert all(float(g.sum()) == pytest.approx(1.0) for d in a for g in d.values())
    hard = gumbel_gates([{k: v.requires_grad_() for k, v in d.items()} for d in logits], 0.5,
                        generator=torch.Generator().manual_seed(4), hard=True)
    assert all(sorted(g.detach().round().tolist()) == [0.0] * (len(g) - 1) + [1.0] for d in hard for g in d.values())
    with pytest.raises(TrainError, match="tau must be > 0"):
        gumbel_gates(logits, 0.0)


def test_bad_gates_and_unsupported_supernets_are_one_line(micro_space):
    net, x = _net(micro_space), _x(_net(micro_space))
    gates = one_hot_gates(micro_space, micro_space.sample(0))
    with pytest.raises(ArchError, match="has 3 decisions, got 2 gate mappings"):
        net.forward_relaxed(x, gates[:2])
    bad = [dict(g) for g in gates]
    bad[0]["radix"] = torch.ones(1)
    with pytest.raises(ArchError, match=r"unknown dimension 'radix'; valid: skip, kernel, expansion"):
        net.forward_relaxed(x, bad)
    bad = [dict(g) for g in gates]
    del bad[1]["kernel"]
    with pytest.raises(ArchError, match=r"missing dimension 'kernel' \(values 3, 5\)"):
        net.forward_relaxed(x, bad)
    bad = [dict(g) for g in gates]
    bad[1]["width"] = torch.ones(3)
    with pytest.raises(ArchError, match=r"must be a tensor of shape \(2,\) over 0.5, 1.0; got \(3,\)"):
        net.forward_relaxed(x, bad)
    bad = [dict(g) for g in gates]
    bad[0]["width"] = torch.zeros(2)
    with pytest.raises(ArchError, match="'width'\\] are all 0"):
        net.forward_relaxed(x, bad)
    # omitted single-valued dimensions are fine
    trimmed = [{k: v for k, v in g.items() if len(v) > 1} for g in gates]
    with torch.no_grad(), net.batch_stats():
        assert torch.equal(net.forward_relaxed(x, trimmed), net.forward_relaxed(x, gates))
    with pytest.raises(ArchError, match="factorized space"):
        Supernet(get_space("fbnet"), resolution=128).forward_relaxed(x, [])
    grouped = space_from_dict({**MICRO_SPEC, "name": "micro_g", "factorized": {"groups": [1, 2], "expansion": [2]}})
    with pytest.raises(ArchError, match="op 'k3_e2_g2' of space 'micro_g' is grouped; only ops with groups 1"):
        Supernet(grouped).forward_relaxed(x, [])
    with pytest.raises(TrainError, match="shared-BN supernet"):
        Supernet(micro_space, private_bn="project").forward_relaxed(x, gates)
    with pytest.raises(ArchError, match="gates_from_flat: space 'micro' has 21 decision dimensions, got 1"):
        gates_from_flat(micro_space, [torch.ones(2)])
