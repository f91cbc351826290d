"""Opt-in per-choice BatchNorm of the supernet (``Supernet(..., private_bn=...)``, BN-NAS's need)."""
import hashlib

import numpy as np
import pytest
import torch

from hwnas.errors import TrainError
from hwnas.nn._supernet_layers import bn_key
from hwnas.nn.relaxed import gate_dims, gumbel_gates
from hwnas.nn.supernet import Supernet, private_bn_from_state, recalibrate_bn
from hwnas.profiling.onnx_graph import randomize_bn
from hwnas.space import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# sha256 of "key:shape" lines of the default state dict, taken before private BN existed:
# with the option off the layout is exactly what older supernet.pt files hold
LAYOUT = {
    "micro": (62, "47c95371f825454c1cac742bd372b8e44f1e866ecf04b384fd9662ac82292c44"),
    "tiny": (140, "27afeaedd027fb322bf5058439f8f90bfa0690f0d473795c8201368ad64cf604"),
}


def _layout(net):
    lines = [f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items()]
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_off_keeps_the_old_state_dict_layout(name, micro_space):
    space = micro_space if name == "micro" else get_space(name)
    assert _layout(Supernet(space, seed=1)) == LAYOUT[name]
    assert _layout(Supernet(space, seed=1, private_bn=())) == LAYOUT[name]
    assert private_bn_from_state(Supernet(space).state_dict()) == ()


def test_private_bn_changes_only_which_bn_a_path_reads(micro_space):
    """Same seed, private on or off: every conv weight equal and, at BN's init (gamma 1,
    beta 0) with batch statistics, every path's output equal bit for bit."""
    shared = Supernet(micro_space, seed=3)
    private = Supernet(micro_space, seed=3, private_bn=("expand", "spatial", "project"))
    assert private.private_bn == ("expand", "spatial", "project")
    ps, pp = shared.state_dict(), private.state_dict()
    convs = [k for k in ps if k.endswith(("_w", "_b")) or k.startswith(("stem.0", "classifier"))]
    assert convs and all(torch.equal(ps[k], pp[k]) for k in convs)
    assert not any(".project_bn." in k for k in pp) and any(".project_bns." in k for k in pp)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    with torch.no_grad(), shared.batch_stats(), private.batch_stats():
        for _ in range(12):
            arch = micro_space.sample(rng)
            assert torch.equal(shared(x, arch), private(x, arch)), str(arch)


def test_two_choices_own_different_bns_and_only_theirs_moves_their_path(micro_space):
    net = Supernet(micro_space, seed=0, private_bn="project")
    slot = net.slots[1]
    a, b = micro_space.parse("k3_e1-k3_e1-k3_e1"), micro_space.parse("k3_e1-k5_e1-k3_e1")
    bn_a, bn_b = slot.bn("project", net.plan(a).layers[1].op), slot.bn("project", net.plan(b).layers[1].op)
    assert bn_a is slot.project_bns["k3_e1"] and bn_b is slot.project_bns["k5_e1"]
    assert bn_a.weight.data_ptr() != bn_b.weight.data_ptr()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), net.batch_stats():
        before = net(x, a).clone(), net(x, b).clone()
        bn_b.bias.add_(0.5)
        after = net(x, a), net(x, b)
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])
    # shared BN: the same edit moves both paths
    shared = Supernet(micro_space, seed=0)
    with torch.no_grad(), shared.batch_stats():
        before = shared(x, a).clone(), shared(x, b).clone()
        shared.slots[1].project_bn.bias.add_(0.5)
        assert not torch.allclose(shared(x, a), before[0]) and not torch.allclose(shared(x, b), before[1])
    # the dotted width of an op name becomes a valid module key
    assert bn_key("k3_e1_w0.5") == "k3_e1_w0p5" and "k3_e1_w0p5" in slot.project_bns


def test_extracted_subnet_takes_the_chosen_choices_private_bn(micro_space):
    net = Supernet(micro_space, seed=0, private_bn=("spatial", "project"))
    torch.manual_seed(0)
    randomize_bn(net)  # every private BN different
    arch = micro_space.parse("k5_e3_w0.5-k3_e1-k5_e1")
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    recalibrate_bn(net, arch, [(x, None)])
    net.eval().set_active_subnet(arch)
    sub = net.get_active_subnet()
    for i, p in enumerate(net.plan(arch).layers):
        own = net.slots[i].project_bns[bn_key(p.op.name)]
        assert torch.equal(sub.layers[i].project[1].weight, own.weight[:p.out_channels])
        assert torch.equal(sub.layers[i].project[1].running_mean, own.running_mean[:p.out_channels])
        dw = net.slots[i].dw_bns[bn_key(p.op.name)]
        assert torch.equal(sub.layers[i].spatial[1].weight, dw.weight[:p.hidden])
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x), atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip_and_mismatch(micro_space):
    net = Supernet(micro_space, seed=0, private_bn=("project",))
    randomize_bn(net)
    state = net.state_dict()
    assert private_bn_from_state(state) == ("project",)
    again = Supernet(micro_space, private_bn=private_bn_from_state(state))
    again.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x, micro_space.sample(1)), net.eval()(x, micro_space.sample(1)))
    with pytest.raises(RuntimeError, match="project_bn"):  # a default supernet refuses a private state
        Supernet(micro_space).load_state_dict(state)
    spatial = Supernet(get_space("fbnetv2"), private_bn="spatial")  # split-attention BN: per op, not per radix
    assert private_bn_from_state(spatial.state_dict()) == ("spatial",)
    assert not hasattr(spatial.slots[1], "sa_bn") and "k3_e1_w0p75_sa2" in spatial.slots[1].sa_bns


def test_bad_private_bn_is_one_line():
    with pytest.raises(TrainError, match=r"unknown BN position 'last'; valid: expand, spatial, project$"):
        Supernet(get_space("tiny"), private_bn=("project", "last"))


# -- synchronised BN over two ranks: private BNs are syncable like the shared ones --------
def _rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from tests.conftest import MICRO_SPEC
    from hwnas.space import register_space, space_from_dict

    torch.set_num_threads(1)
    register_space("micro", lambda: space_from_dict(dict(MICRO_SPEC)))
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        net, arch, x = _sync_case()
        shared, gates = _relaxed_case()
        with net.synced_bn(), shared.synced_bn():
            y = net(x[4 * rank:4 * rank + 4], arch)
            relaxed = shared.forward_relaxed(x[4 * rank:4 * rank + 4], gates)
        torch.save({"y": y.detach(), "state": net.state_dict(), "relaxed": relaxed.detach()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _sync_case():
    space = get_space("micro")
    net = Supernet(space, seed=0, private_bn=("expand", "project")).double()
    torch.manual_seed(0)
    randomize_bn(net)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return net.train(), space.parse("k5_e3_w0.5-k3_e3-k5_e1"), x


def _relaxed_case():
    space = get_space("micro")
    logits = [{k: torch.zeros(len(v), dtype=torch.float64) for k, v in d.items()} for d in gate_dims(space)]
    return (Supernet(space, seed=0).double().train(),
            gumbel_gates(logits, 1.0, generator=torch.Generator().manual_seed(0)))


def test_private_bns_and_the_relaxed_forward_synchronise_over_ranks(micro_space, tmp_path):
    """Two ranks of 4 images under ``synced_bn()`` compute what one process does with the 8
    images: outputs and the private BNs' running statistics (float64); and so does the
    relaxed forward with soft gates (its BNs are syncable templates too)."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'pg'}", out), nprocs=2, join=True)
    net, arch, x = _sync_case()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ref = net(x, arch).detach()
    got = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), ref, atol=1e-9, rtol=1e-9)
    state = net.state_dict()
    moved = [k for k in state if k.endswith(("running_mean", "running_var")) and not torch.equal(state[k], before[k])]
    assert any(".expand_bns.k5_e3_w0p5." in k for k in moved) and any(".project_bns.k5_e1." in k for k in moved)
    for g in got:
        for k in moved:
            torch.testing.assert_close(g["state"][k], state[k], atol=1e-9, rtol=1e-9)
    shared, gates = _relaxed_case()
    torch.testing.assert_close(torch.cat([g["relaxed"] for g in got]), shared.forward_relaxed(x, gates).detach(),
                               atol=1e-9, rtol=1e-9)
