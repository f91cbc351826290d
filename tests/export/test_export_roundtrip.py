"""Export round trip: train (or not), ONNX, parity, metadata, model card, evaluate."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from hwnas import __version__
from hwnas.evaluate import check_parity, evaluate_onnx, ort_logits, ort_session, read_metadata
from hwnas.export import ExportConfig, export_arch

ARCH = "k3_e3-k5_e1_w0.5-k3_e1"  # a micro-space arch with a residual layer and both kernels
LIMIT = 240  # digits images used: 190 train / 50 val (stratified, 24 a class)


@pytest.fixture(scope="module")
def dry(micro_space, tmp_path_factory):
    """``--epochs 0``: untrained network, fixed batch 1, a budget no CPU can meet."""
    out = tmp_path_factory.mktemp("dry") / "model.onnx"
    events = []
    res = export_arch(ExportConfig(out=out, space="micro", arch=ARCH, epochs=0, limit=LIMIT, latency_runs=5, latency_gap_s=0.0,
                                   latency_warmup=2, latency_budget_ms=1e-6, train_threads=1), progress=events.append)
    return res, events


@pytest.fixture(scope="module")
def trained(micro_space, tmp_path_factory):
    """Two short epochs on a digits subset, dynamic batch."""
    out = tmp_path_factory.mktemp("trained") / "net.onnx"
    events = []
    res = export_arch(ExportConfig(out=out, space="micro", arch=ARCH, epochs=2, batch_size=32, lr=0.1, limit=LIMIT,
                                   latency_runs=5, latency_gap_s=0.0, latency_warmup=2, dynamic_batch=True, latency_budget_ms=1000.0,
                                   train_threads=1),
                      progress=events.append)
    return res, events


def test_dry_run_writes_checked_onnx_with_metadata(dry):
    res, events = dry
    proto = onnx.load(res.onnx_path)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["arch"] == ARCH and meta["space"] == "micro" and meta["hwnas_version"] == __version__
    assert meta["resolution"] == "16" and meta["num_classes"] == "10" and meta["dataset"] == "digits"
    assert float(meta["accuracy"]) == pytest.approx(res.accuracy, abs=1e-6)
    assert meta["data_limit"] == str(LIMIT)
    assert read_metadata(res.onnx_path) == meta
    # fixed batch of 1 when not dynamic
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 16, 16]
    assert res.history == () and [e.stage for e in events if e.stage != "train"] == \
        ["resolve", "data", "onnx", "parity", "latency", "done"]


def test_dry_run_parity_latency_and_budget_verdict(dry):
    res, _ = dry
    p = res.parity
    assert p.passed and p.images == 50 and p.ep_used == "cpu"
    assert 0 <= p.max_abs_diff <= p.tolerance and p.top1_agreement == 1.0
    assert res.ep_parity is None
    assert res.measured_latency_ms > 0 and res.latency["runs"] == 5 and res.latency["ep_used"] == "cpu"
    # an impossible budget is reported as missed, not hidden and not raised
    assert res.latency_budget_ms == 1e-6 and res.within_budget is False
    assert res.predicted_latency_ms is None


def test_model_card_fields(dry):
    res, _ = dry
    card = json.loads(open(res.card_path).read())
    assert res.card_path.endswith("model.json") and card == res.card
    assert card["arch"] == ARCH and card["space"] == "micro" and card["hwnas_version"] == __version__
    assert card["dataset"]["name"] == "digits" and card["dataset"]["val_images"] == 50
    assert card["flops"] == res.flops > 0 and card["params"] == res.params > 0
    assert card["opset"] == 17 and card["parity"]["max_abs_diff"] == res.parity.max_abs_diff
    assert card["latency"]["measured_ms"] == res.measured_latency_ms
    assert card["latency"]["budget_ms"] == 1e-6 and card["latency"]["within_budget"] is False
    assert card["device"]["ep"] == "cpu" and card["device"]["device_id"]
    assert card["training"]["epochs"] == 0 and card["accuracy"] == pytest.approx(res.accuracy)
    assert len(card["input"]["normalise"]["mean"]) == 3


def test_trained_export_runs_dynamic_batch_and_matches_torch(trained):
    res, events = trained
    assert len(res.history) == 2 and res.history[-1].val_acc == pytest.approx(res.accuracy)
    epochs = [e.train.stats for e in events if e.stage == "train" and e.train.stage == "epoch"]
    assert [s.epoch for s in epochs] == [1, 2]
    steps = [e.train.step for e in events if e.stage == "train" and e.train.stage == "step"]
    assert steps == list(range(1, 2 * 6 + 1))  # 190 images / 32 per batch = 6 steps per epoch
    assert res.history[-1].train_loss < res.history[0].train_loss  # it learns
    assert res.parity.passed and res.parity.onnx_accuracy == pytest.approx(res.accuracy, abs=1e-6)
    assert res.within_budget is True and res.dynamic_batch
    sess, used = ort_session(res.onnx_path)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    out = sess.run(None, {"input": x})[0]
    assert out.shape == (3, 10) and used == "cpu"
    # batches of 3 through the loop give the same logits as one batch
    np.testing.assert_allclose(ort_logits(sess, np.concatenate([x, x]), batch_size=3)[3:], out, atol=1e-5)


def test_evaluate_reproduces_the_card_accuracy(trained):
    res, _ = trained
    ev = evaluate_onnx(res.onnx_path, latency_runs=5, latency_gap_s=0.0, latency_warmup=1)
    assert ev["dataset"] == "digits" and ev["images"] == 50 and ev["resolution"] == 16
    assert ev["accuracy"] == pytest.approx(res.accuracy, abs=1e-6) == ev["card_accuracy"]
    assert ev["loss"] == pytest.approx(res.history[-1].val_loss, rel=1e-4)
    assert ev["measured_latency_ms"] > 0 and ev["batch"] == "dynamic" and ev["arch"] == ARCH


def test_evaluate_fixed_batch_model_loops(dry):
    res, _ = dry
    ev = evaluate_onnx(res.onnx_path, measure_latency=False)
    assert ev["batch"] == 1 and ev["images"] == 50 and ev["latency"] is None
    assert ev["accuracy"] == pytest.approx(res.accuracy, abs=1e-6)


def test_parity_check_catches_a_wrong_graph(dry):
    res, _ = dry
    sess, _ = ort_session(res.onnx_path)
    x = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref = ort_logits(sess, x)
    labels = np.zeros(4, np.int64)
    ok = check_parity(open(res.onnx_path, "rb").read(), x, ref, labels)
    assert ok.passed and ok.max_abs_diff < 1e-6
    bad = check_parity(open(res.onnx_path, "rb").read(), x, ref + 0.5, labels)
    assert not bad.passed and bad.max_abs_diff == pytest.approx(0.5, abs=1e-4)


def test_training_is_seeded(micro_space, one_torch_thread):
    from torch.utils.data import TensorDataset

    from hwnas.nn import build_model
    from hwnas.train import TrainConfig, train_network

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 3, 16, 16, generator=g), torch.randint(0, 4, (40,), generator=g))
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        net = build_model(micro_space, ARCH, 16, 4)
        hist = train_network(net, data, data, TrainConfig(epochs=1, batch_size=16, optimizer="adamw", seed=5))
        states.append((net.state_dict(), hist[0].train_loss))
    assert states[0][1] == states[1][1]
    for k, v in states[0][0].items():
        assert torch.equal(v, states[1][0][k]), k
