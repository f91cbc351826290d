import math

import numpy as np
import pytest

from hwnas.errors import ArchError, RegistryError, SpaceError
from hwnas.space import SKIP, Arch, get_space, list_spaces, parse_op, register_space, space_from_dict
from tests.conftest import ALL_SPACES, MICRO_SPEC

FBNET_OPS = ["k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"]


def test_builtins_are_listed():
    assert {"fbnet", "fbnetv2", "tiny"} <= set(list_spaces())


def test_fbnet_is_exactly_the_paper_space():
    sp = get_space("fbnet")
    assert len(sp.layers) == 22
    assert sp.size() == 9 ** 22
    assert sp.size_str().endswith("(~10^21.0)")
    for d in sp.decisions:
        assert list(d.choices) == FBNET_OPS
    stages = [(l.channels, l.stride) for l in sp.layers if l.first_in_stage]
    assert stages == [(16, 1), (24, 2), (32, 2), (64, 2), (112, 1), (184, 2), (352, 1)]
    assert [sum(1 for l in sp.layers if l.stage == s) for s in range(7)] == [1, 4, 4, 4, 4, 4, 1]
    assert (sp.stem.channels, sp.stem.stride, sp.head_channels, sp.num_classes) == (16, 2, 1504, 1000)
    assert sp.default_resolution == 224


@pytest.mark.parametrize("name", ALL_SPACES)
def test_canonical_string_round_trips(name):
    sp = get_space(name)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = sp.sample(rng)
        again = sp.parse(str(arch))
        assert again == arch and hash(again) == hash(arch)
        assert sp.from_indices(sp.indices(arch)) == arch


def test_sampling_is_seeded():
    sp = get_space("tiny")
    assert sp.sample(3) == sp.sample(3)
    assert len({sp.sample(i) for i in range(50)}) > 40


def test_factorized_dims_cover_fpnas_dimensions():
    sp = get_space("fbnetv2")
    assert sp.decisions[0].name == "resolution"
    dims = sp.decisions[3].dim_values()  # layer2: second of its stage, so skippable
    assert dims["kernel"] == (3, 5)
    assert dims["expansion"] == (1.0, 2.0, 3.0, 4.0, 6.0)
    assert dims["block"] == ("mb", "sa")
    assert dims["splits"] == (1, 2, 4)
    assert dims["skip"] == ("no", "yes")
    assert len(dims["width"]) == 3 and dims["se"] == (False, True)


@pytest.mark.parametrize("name", ["tiny", "fbnetv2"])
def test_factorized_product_is_normalised(name):
    """P(choice) = prod of its dims' probabilities sums to one over every decision."""
    sp = get_space(name)
    rng = np.random.default_rng(1)
    for d in sp.decisions:
        probs = {dim: dict(zip(vals, rng.dirichlet(np.ones(len(vals))))) for dim, vals in d.dim_values().items()}
        total = sum(math.prod(probs[k][v] for k, v in pairs) for pairs in d.dims)
        assert total == pytest.approx(1.0)


def test_op_names_parse_and_reject():
    assert parse_op("skip") is SKIP
    op = parse_op("k5_e6_w0.75_se_sa2")
    assert (op.kernel, op.expansion, op.width, op.se, op.radix) == (5, 6.0, 0.75, True, 2)
    for bad in ["k4_e1", "k3", "k3_e1_zz", "e3_k3", "k3_e1_g2_sa2"]:
        with pytest.raises(SpaceError):
            parse_op(bad)


def test_malformed_arch_strings_are_clear_errors():
    sp = get_space("tiny")
    good = str(sp.sample(0)).split("-")
    with pytest.raises(ArchError, match="must have 6 tokens"):
        sp.parse("-".join(good[:3]))
    with pytest.raises(ArchError, match="valid:"):
        sp.parse("-".join(["k7_e2"] + good[1:]))
    with pytest.raises(ArchError, match="skip"):  # layer 0 is first of its stage: no skip
        sp.parse("-".join(["skip"] + good[1:]))
    with pytest.raises(ArchError, match="not allowed"):
        sp.resolution(sp.sample(0), 48)
    with pytest.raises(ArchError, match="space"):
        sp.indices(Arch("fbnet", tuple(good)))


def test_unknown_space_lists_valid():
    with pytest.raises(SpaceError, match="fbnet, fbnetv2"):
        get_space("nope")


def test_yaml_space_file_and_errors(tmp_path):
    import yaml

    path = tmp_path / "mine.yaml"
    spec = dict(MICRO_SPEC, name="mine")
    path.write_text(yaml.safe_dump(spec))
    sp = get_space(str(path))
    assert sp.name == "mine" and len(sp.layers) == 3
    bad_op = dict(spec, factorized=None, ops=["k3_e1", "k3_e9_zz"])
    del bad_op["factorized"]
    with pytest.raises(SpaceError, match="unknown op 'k3_e9_zz'"):
        space_from_dict(bad_op)
    with pytest.raises(SpaceError, match="non-empty"):
        space_from_dict(dict(spec, factorized={"kernel": []}))
    with pytest.raises(SpaceError, match="unknown dimensions"):
        space_from_dict(dict(spec, factorized={"colour": [1]}))
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(SpaceError, match="not valid YAML"):
        get_space(str(tmp_path / "broken.yaml"))


def test_registry_refuses_duplicates(micro_space):
    with pytest.raises(RegistryError, match="already registered"):
        register_space("micro", lambda: micro_space)
    with pytest.raises(RegistryError):
        register_space("tiny", lambda: micro_space)
