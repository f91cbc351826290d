"""Per-layer lookup table: every reachable (layer, op, channels) once, plus the overhead."""
from __future__ import annotations

import pytest

from hwnas.profiling.campaign import CampaignConfig
from hwnas.profiling.layers import layer_entries, layer_onnx
from hwnas.profiling.runner import measure
from hwnas.profiling.store import LatencyStore
from hwnas.space import plan_arch


def test_layer_table_covers_every_arch(micro_space, tmp_path):
    from hwnas.profiling.layers import profile_layers

    cfg = CampaignConfig(space="micro", num_archs=0, warmup=1, runs=3, calibration_sessions=2, calibration_gap_s=0.0)
    with LatencyStore(tmp_path / "l.db") as s:
        n = profile_layers(s, cfg)
        entries, _, _ = layer_entries(micro_space, 16)
        assert n == len(entries) + 1
        assert profile_layers(s, cfg) == 0  # stored ones are skipped
        table = s.layer_table("micro")
        assert len(table) == len(entries) and all(v >= 0 for v in table.values())
        assert s.layer_overhead_ms("micro") > 0
        for i in range(20):  # every layer of any arch has an entry
            plan = plan_arch(micro_space, micro_space.sample(i))
            for j, lp in enumerate(plan.layers):
                assert (j, lp.op.name, lp.in_channels) in table
        base = [r for r in s.conn.execute("SELECT baseline_ms FROM layer_latency WHERE layer >= 0")]
        assert all(b[0] > 0 for b in base)


def test_single_layer_graph_runs(micro_space):
    entries, _, _ = layer_entries(micro_space, 16)
    from hwnas.space._plan import plan_layer

    i, op, ch, size = next(e for e in entries if not e[1].skip)
    lp = plan_layer(micro_space.layers[i], op, ch, size)
    assert measure(layer_onnx(lp, 1), warmup=1, runs=2).median_ms > 0
    assert pytest.approx(0) != measure(layer_onnx(lp, 2), warmup=0, runs=1, batch_size=2).median_ms
