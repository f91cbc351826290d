"""``from_supernet``: the exported network carries the search's shared weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hwnas.errors import ExportError
from hwnas.evaluate import ort_logits, ort_session
from hwnas.export import ExportConfig, export_arch
from hwnas.profiling.onnx_graph import randomize_bn

ARCH = "k5_e3_w0.5-k3_e3-skip"
LIMIT = 200


def _run_dir(path, space, num_classes=10, private_bn=()):
    """A search run folder as ``hwnas search`` leaves it: result.json, config.json, supernet.pt."""
    from hwnas.nn.supernet import Supernet

    path.mkdir()
    net = Supernet(space, num_classes=num_classes, resolution=16, seed=7, private_bn=private_bn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        randomize_bn(net)  # non-trivial BN statistics, so a copy that drops them shows
    torch.save(net.state_dict(), path / "supernet.pt")
    (path / "result.json").write_text(json.dumps({
        "space": space.name, "arch": ARCH, "resolution": 16, "strategy": "fpnas", "seed": 0, "dataset": "digits",
        "predictor": None, "latency_budget_ms": 5.0, "flops_budget": None, "predicted_latency_ms": 0.25,
        "flops": 1, "params": 1, "supernet_val_acc": 0.5, "archs_sampled": 10, "wall_time_s": 1.0,
        "budget_margin": 0.9}))
    (path / "config.json").write_text(json.dumps({"space": space.name, "dataset": "digits", "limit": LIMIT}))
    return net.eval()


@pytest.mark.parametrize("private_bn", [(), ("project",)])  # BN-NAS's supernet: one project BN per choice
def test_from_supernet_exports_the_shared_weights(micro_space, tmp_path, one_torch_thread, private_bn):
    net = _run_dir(tmp_path / "run", micro_space, private_bn=private_bn)
    out = tmp_path / "m.onnx"
    res = export_arch(ExportConfig(out=out, run_dir=tmp_path / "run", from_supernet=True, epochs=0,
                                   bn_calibration_batches=0, latency_runs=3, latency_gap_s=0.0, latency_warmup=1))
    # the run supplies the arch, the split (seed + limit from config.json), prediction and budget
    assert res.arch == ARCH and res.space == "micro" and res.card["dataset"]["limit"] == LIMIT
    assert res.predicted_latency_ms == 0.25 and res.latency_budget_ms == 5.0
    assert res.within_budget == (res.measured_latency_ms <= 5.0)
    assert res.card["search"]["strategy"] == "fpnas" and res.card["training"]["from_supernet"] is True
    # without BN recalibration the ONNX model computes exactly the supernet's path in eval mode
    from hwnas.data import load_dataset

    x = load_dataset("digits", 16, seed=0, limit=LIMIT).val.tensors[0][:16]
    with torch.no_grad():
        ref = net(x, micro_space.parse(ARCH)).numpy()
    sess, _ = ort_session(res.onnx_path)
    np.testing.assert_allclose(ort_logits(sess, x.numpy()), ref, atol=1e-4, rtol=1e-4)


def test_from_supernet_fine_tunes_after_bn_recalibration(micro_space, tmp_path, one_torch_thread):
    _run_dir(tmp_path / "run", micro_space)
    res = export_arch(ExportConfig(out=tmp_path / "m.onnx", run_dir=tmp_path / "run", from_supernet=True, epochs=1,
                                   batch_size=32, latency_runs=3, latency_gap_s=0.0, latency_warmup=1, bn_calibration_batches=3))
    assert len(res.history) == 1 and res.parity.passed
    assert res.card["training"]["lr"] == pytest.approx(0.01)  # a fifth of SGD's from-scratch 0.05


def test_supernet_of_another_dataset_is_a_clear_error(micro_space, tmp_path):
    _run_dir(tmp_path / "run", micro_space, num_classes=4)
    with pytest.raises(ExportError, match="does not fit Supernet.*num_classes=10"):
        export_arch(ExportConfig(out=tmp_path / "m.onnx", run_dir=tmp_path / "run", from_supernet=True, epochs=0))
    assert not (tmp_path / "m.onnx").exists()
