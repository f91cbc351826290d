"""The directly-built ONNX graph computes what the torch network computes."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hwnas.nn import build_model
from hwnas.profiling.onnx_graph import arch_to_onnx, module_to_onnx, network_to_onnx, randomize_bn
from hwnas.space import get_space
from tests.conftest import ALL_SPACES


def _ort(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _torch_out(sp, arch, res, seed, x):
    torch.manual_seed(seed)
    model = build_model(sp, arch, res).eval()
    randomize_bn(model)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", ALL_SPACES)
def test_onnx_matches_torch_on_random_archs(name):
    sp = get_space(name)
    rng = np.random.default_rng(11)
    for _ in range(3 if name == "tiny" else 2):
        arch = sp.sample(rng)
        res = sp.resolution(arch, None if sp.searchable_resolution else min(sp.resolutions))
        fixed = None if sp.searchable_resolution else res
        proto = arch_to_onnx(sp, arch, resolution=fixed, seed=5)
        onnx.checker.check_model(proto)
        x = rng.standard_normal((1, 3, res, res)).astype(np.float32)
        expected = _torch_out(sp, arch, fixed, 5, x)
        np.testing.assert_allclose(_ort(proto, x), expected, rtol=1e-3, atol=1e-4)


def test_every_fbnet_op_matches():
    sp = get_space("fbnet")
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    for op in sp.decisions[0].choices:
        tokens = [op if op != "skip" or i > 0 else "k3_e1" for i in range(22)]
        arch = "-".join(tokens)
        proto = arch_to_onnx(sp, arch, resolution=128, seed=1)
        np.testing.assert_allclose(_ort(proto, x), _torch_out(sp, arch, 128, 1, x), rtol=1e-3, atol=1e-4)


def test_batch_and_dynamic_batch(micro_space):
    arch = micro_space.sample(2)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    assert _ort(arch_to_onnx(micro_space, arch, batch_size=3), x).shape == (3, 4)
    dyn = arch_to_onnx(micro_space, arch, dynamic_batch=True)
    assert _ort(dyn, x).shape == (3, 4) and _ort(dyn, x[:1]).shape == (1, 4)


def test_opset_18_reduce_mean_form_matches(micro_space):
    sp = get_space("tiny")
    arch = sp.parse("k3_e2_se-k5_e4_se-k3_e6_se-skip-k5_e2_se-k3_e4_se")
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_ort(arch_to_onnx(sp, arch, opset=18, seed=3), x),
                               _ort(arch_to_onnx(sp, arch, opset=17, seed=3), x), rtol=1e-5, atol=1e-6)


def test_torch_exporter_agrees_with_direct_builder():
    sp = get_space("tiny")
    arch = sp.sample(4)
    torch.manual_seed(0)
    model = build_model(sp, arch).eval()
    randomize_bn(model)
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_ort(network_to_onnx(model), x), _ort(module_to_onnx(model, (1, 3, 32, 32)), x),
                               rtol=1e-3, atol=1e-4)
