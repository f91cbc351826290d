"""BN-NAS's supernet side: BN-only training and the data-free BN indicator (brief 3.6)."""
import itertools

import numpy as np
import pytest
import torch

from hwnas.errors import TrainError
from hwnas.nn._supernet_layers import bn_key
from hwnas.nn.bn_nas import bn_indicator, bn_layer_scores, train_only_bn
from hwnas.nn.supernet import Supernet, train_supernet_epoch
from hwnas.space import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _is_bn(net, name: str) -> bool:
    module = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
    return isinstance(module, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("which", ["last", "all"])
def test_bn_only_steps_leave_every_conv_and_linear_weight_bit_identical(which):
    """The brief's decisive test: SGD with momentum and weight decay over *all* parameters,
    three steps of uniform paths: conv/linear weights unchanged bit for bit, BN gammas moved."""
    space = get_space("tiny")
    net = Supernet(space, seed=0, private_bn=("project",))
    trainable = train_only_bn(net, which)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    rng = np.random.default_rng(0)
    train_supernet_epoch(net, data, opt, lambda: space.sample(rng))
    after = dict(net.named_parameters())
    weights = [k for k in before if not _is_bn(net, k)]
    assert len(weights) > 20 and any(k.startswith("classifier") for k in weights)
    assert all(torch.equal(after[k], before[k]) for k in weights)
    bn_gammas = [k for k in before if _is_bn(net, k) and k.endswith("weight")]
    ids = {id(p) for p in trainable}
    moved = [k for k in bn_gammas if not torch.equal(after[k], before[k])]
    assert moved and all(id(after[k]) in ids for k in moved)
    if which == "last":  # BN-NAS's filter: only the BN after each choice's last 1x1 conv
        assert all(".project_bns." in k or ".proj_bn." in k for k in moved)
        assert torch.equal(after["stem.1.weight"], before["stem.1.weight"])
    else:
        assert not torch.equal(after["stem.1.weight"], before["stem.1.weight"])
        assert any(".expand_bn." in k for k in moved)
    net.requires_grad_(True)


def _constructed(micro_space, private=("project",)):
    """micro with known project-BN gammas: per slot, op ``i`` (in layer.ops order) gets
    ``|gamma| = 1 + i`` on its channels with alternating signs (the indicator takes |gamma|),
    and the skip projection ``0.25``; private expand BNs (if any) get ``-3``."""
    net = Supernet(micro_space, seed=0, private_bn=private)
    with torch.no_grad():
        for slot, layer in zip(net.slots, micro_space.layers):
            for i, op in enumerate(o for o in layer.ops if not o.skip):
                w = slot.project_bns[bn_key(op.name)].weight
                w.copy_((1.0 + i) * (-1.0) ** torch.arange(len(w)))
                if "expand" in private:
                    slot.expand_bns[bn_key(op.name)].weight.fill_(-3.0)
            if hasattr(slot, "proj_bn"):
                slot.proj_bn.weight.fill_(-0.25)
    return net


def test_indicator_sums_mean_abs_gamma_of_the_chosen_choices(micro_space):
    net = _constructed(micro_space)
    ops = [[o.name for o in layer.ops if not o.skip] for layer in micro_space.layers]
    arch = micro_space.parse(f"{ops[0][3]}-{ops[1][0]}-{ops[2][5]}")
    assert bn_layer_scores(net, arch) == [4.0, 1.0, 6.0]
    assert bn_indicator(net, arch) == 11.0 and bn_indicator(net, arch, reduce="mean") == pytest.approx(11 / 3)
    # identity skip: no BN (sum adds 0, mean leaves it out)
    skip = micro_space.parse(f"{ops[0][3]}-{ops[1][0]}-skip")
    assert bn_layer_scores(net, skip) == [4.0, 1.0, None]
    assert bn_indicator(net, skip) == 5.0 and bn_indicator(net, skip, reduce="mean") == 2.5
    # only the path's own channels count: gammas beyond a narrow op's width do not
    narrow = next(o for o in micro_space.layers[1].ops if o.width == 0.5 and not o.skip)
    a = micro_space.parse(f"{ops[0][0]}-{narrow.name}-{ops[2][0]}")
    n = net.plan(a).layers[1].out_channels
    before = bn_indicator(net, a)
    with torch.no_grad():
        net.slots[1].project_bns[bn_key(narrow.name)].weight[n:] = 100.0
    assert bn_indicator(net, a) == before
    # several positions: a layer scores the mean over them
    both = _constructed(micro_space, ("expand", "project"))
    assert bn_layer_scores(both, arch, ("expand", "project")) == [3.5, 2.0, 4.5]
    assert bn_layer_scores(both, arch, "expand") == [3.0, 3.0, 3.0]


def test_indicator_ranks_choices_as_constructed(micro_space):
    """Over all 576 micro archs the sum's best is each slot's highest-gamma op (its last
    non-skip op) and its worst the first ops with the skip; the mean scores a skip as
    neither better nor worse than the layers around it."""
    net = _constructed(micro_space)
    sizes = [range(len(d.choices)) for d in micro_space.decisions]
    archs = [micro_space.from_indices(i) for i in itertools.product(*sizes)]
    scores = {a: bn_indicator(net, a) for a in archs}
    best, worst = max(scores, key=scores.get), min(scores, key=scores.get)
    last = [[o.name for o in layer.ops if not o.skip] for layer in micro_space.layers]
    assert best.tokens == tuple(ops[-1] for ops in last) and scores[best] == 24.0
    assert worst.tokens == (last[0][0], last[1][0], "skip") and scores[worst] == 2.0
    assert sorted(scores.values())[:2] == [2.0, 3.0]  # unique worst: the skip scores 0
    means = {a: bn_indicator(net, a, reduce="mean") for a in archs}
    top = [a for a in archs if means[a] == max(means.values())]
    assert sorted(top, key=str) == sorted([best, micro_space.parse(f"{last[0][-1]}-{last[1][-1]}-skip")], key=str)


def test_a_projection_skip_is_scored_and_trained_by_its_own_bn(proj_space):
    """hwnas extension: a skip that is a 1x1 projection has a BN after its last 1x1 conv."""
    net = _constructed(proj_space)
    ops = [[o.name for o in layer.ops if not o.skip] for layer in proj_space.layers]
    arch = proj_space.parse(f"{ops[0][1]}-skip-{ops[2][2]}")
    assert net.plan(arch).layers[1].projection
    assert bn_layer_scores(net, arch) == [2.0, 0.25, 3.0] and bn_indicator(net, arch) == 5.25
    trainable = {id(p) for p in train_only_bn(net, "last")}
    assert id(net.slots[1].proj_bn.weight) in trainable and id(net.slots[1].proj_w) not in trainable
    assert id(net.head_bn.weight) not in trainable  # the head BN is no choice's
    net.requires_grad_(True)


def test_indicator_refuses_shared_bn_and_bad_arguments(micro_space):
    arch = micro_space.sample(0)
    with pytest.raises(TrainError, match=r"shared by every choice.*private_bn=\('project',\)"):
        bn_indicator(Supernet(micro_space), arch)
    net = Supernet(micro_space, private_bn="project")
    with pytest.raises(TrainError, match="private_bn=\\('expand',\\)"):
        bn_indicator(net, arch, positions="expand")
    with pytest.raises(TrainError, match="valid: expand, spatial, project"):
        bn_indicator(net, arch, positions=("gamma",))
    with pytest.raises(TrainError, match="reduce must be one of sum, mean; got 'max'"):
        bn_indicator(net, arch, reduce="max")
    with pytest.raises(TrainError, match="which must be one of last, all; got 'bn'"):
        train_only_bn(net, "bn")
