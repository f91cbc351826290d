"""``Arch -> nn.Module`` for every space, any class count, every allowed resolution."""
import pytest
import torch

from hwnas.errors import ArchError
from hwnas.nn import MBConv, SplitAttention, build_model
from hwnas.space import get_space, plan_arch
from tests.conftest import ALL_SPACES


@pytest.mark.parametrize("name", ALL_SPACES)
def test_every_space_builds_and_runs(name):
    sp = get_space(name)
    arch = sp.sample(3)
    res = sp.resolution(arch, None if sp.searchable_resolution else min(sp.resolutions))
    model = build_model(sp, arch, None if sp.searchable_resolution else res, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_plan_shapes_follow_strides_and_widths():
    sp = get_space("tiny")
    arch = sp.parse("k3_e2_w0.5-skip-k5_e6_se-k3_e4-k3_e2-skip")
    plan = plan_arch(sp, arch)
    assert [lp.out_size for lp in plan.layers] == [16, 16, 8, 8, 4, 4]
    assert plan.layers[0].out_channels == 16  # make_divisible(24 * 0.5, 8)
    assert plan.layers[1].op.skip and not plan.layers[1].projection
    assert plan.layers[3].residual and not plan.layers[2].residual


def test_split_attention_and_se_blocks_are_built():
    sp = get_space("fbnetv2")
    tokens = [d.choices[0] for d in sp.decisions]
    tokens[0] = "r128"
    tokens[1] = "k5_e6_se_sa2"
    model = build_model(sp, "-".join(tokens))
    block = model.layers[0]
    assert isinstance(block, MBConv) and isinstance(block.spatial, SplitAttention)
    assert block.spatial.radix == 2 and not isinstance(block.se, torch.nn.Identity)


def test_resolution_not_allowed_is_refused():
    sp = get_space("tiny")
    with pytest.raises(ArchError, match="valid: 32"):
        build_model(sp, sp.sample(0), resolution=64)


def test_grouped_ops_shuffle_channels():
    sp = get_space("fbnet")
    tokens = ["k3_e1_g2"] * 22
    model = build_model(sp, "-".join(tokens), resolution=128).eval()
    assert model.layers[0].shuffle.groups == 2
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert model.layers[0].shuffle(x).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
