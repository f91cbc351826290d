"""Per-layer latencies for a lookup-table predictor (``hwnas profile --layers``).

Why: a layer's cost depends only on its position (stride, spatial size), its op and its
input channels, so a space of 10^21 archs has only a few hundred distinct layers; a
table of their latencies plus the fixed stem/head part predicts a network as a sum
(FBNet, Wu et al. 2019, Eq. 3: LAT(a) = sum_l LAT(b_l^(a))).

Each (layer index, op, reachable input channels) is measured once as an isolated
single-layer ONNX graph, emitted by the very graph writer the full networks use
(``onnx_graph._Graph``, BN folded), with the campaign's session options.  Every
``session.run`` also pays a fixed framework cost (input/output copies, dispatch); to
make the sum over layers meaningful we measure an Identity graph of the same input
shape and store ``median_ms = layer - identity`` (clamped at 0), with the subtracted
``baseline_ms`` beside it.  The fixed overhead row (layer -1) is stem + (head, pool,
classifier), the head measured on the widest reachable last-layer output, and counts
the framework cost once, as a whole network run does.  Every graph is timed as the arch
rows are: against the campaign's canary by default, on the calibrated scale (``_measurer``).
"""
from __future__ import annotations

import logging

from hwnas.errors import HwnasError
from hwnas.space import get_space
from hwnas.space._plan import conv_out, plan_layer

logger = logging.getLogger(__name__)


def layer_entries(space, resolution: int):
    """Every (layer index, Op, input channels, input size) an arch of ``space`` can reach,
    plus the reachable last-layer channel counts and the final spatial size."""
    out, chans, size = [], {space.stem.channels}, conv_out(resolution, space.stem.stride)
    for i, layer in enumerate(space.layers):
        nxt = set()
        for ch in sorted(chans):
            for op in layer.ops:
                out.append((i, op, ch, size))
                nxt.add(plan_layer(layer, op, ch, size).out_channels)
        chans, size = nxt, conv_out(size, layer.stride)
    return out, chans, size


def _model(g, in_shape, out_name, out_shape) -> bytes:
    from hwnas.profiling.onnx_graph import OUTPUT_NAME

    g.node("Identity", [out_name], out=OUTPUT_NAME)
    return g.model("hwnas_layer", in_shape, out_shape).SerializeToString()


def layer_onnx(lp, batch: int) -> bytes:
    """A single planned layer as an ONNX model (seeded random weights)."""
    from hwnas.nn import build_layer
    from hwnas.profiling.onnx_graph import DEFAULT_OPSET, INPUT_NAME, _Graph, seeded_module

    module = seeded_module(lambda: build_layer(lp))
    g = _Graph(DEFAULT_OPSET)
    y = g.layer(INPUT_NAME, module, lp)
    return _model(g, (batch, lp.in_channels, lp.in_size, lp.in_size), y,
                  (batch, lp.out_channels, lp.out_size, lp.out_size))


def identity_onnx(shape) -> bytes:
    from hwnas.profiling.onnx_graph import DEFAULT_OPSET, INPUT_NAME, _Graph

    return _model(_Graph(DEFAULT_OPSET), shape, INPUT_NAME, shape)


def fixed_onnx(space, resolution: int, last_channels: int, final_size: int, batch: int) -> tuple[bytes, bytes]:
    """(stem graph, head+pool+classifier graph) of ``space``."""
    import torch
    from torch import nn

    from hwnas.nn.blocks import ConvBNAct
    from hwnas.profiling.onnx_graph import DEFAULT_OPSET, INPUT_NAME, _Graph, randomize_bn

    st = space.stem
    stem_size = conv_out(resolution, st.stride)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        stem = ConvBNAct(space.in_channels, st.channels, st.kernel, st.stride).eval()
        head = ConvBNAct(last_channels, space.head_channels, 1).eval() if space.head_channels else None
        fc = nn.Linear(space.head_channels or last_channels, space.num_classes)
        for m in (stem, head):
            if m is not None:
                randomize_bn(m)
    g = _Graph(DEFAULT_OPSET)
    y = g.conv_bn(INPUT_NAME, stem, act=True)
    stem_bytes = _model(g, (batch, space.in_channels, resolution, resolution), y,
                        (batch, st.channels, stem_size, stem_size))
    g = _Graph(DEFAULT_OPSET)
    x = g.conv_bn(INPUT_NAME, head, act=True) if head is not None else INPUT_NAME
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    y = g.node("Gemm", [x, g.const(fc.weight), g.const(fc.bias)], transB=1)
    head_bytes = _model(g, (batch, last_channels, final_size, final_size), y, (batch, space.num_classes))
    return stem_bytes, head_bytes


def profile_layers(store, cfg, on_row=None) -> int:
    """Measure every reachable layer once (skipping stored ones) plus the fixed overhead;
    returns the number of rows written.  ``on_row(done, total)`` reports progress."""
    from hwnas.profiling.campaign import _resolution_filter, campaign_device, check_config
    from hwnas.profiling.store import OVERHEAD_LAYER, OVERHEAD_OP

    check_config(cfg)
    space = get_space(cfg.space)
    res = _resolution_filter(cfg) or cfg.resolution or space.default_resolution
    fp = campaign_device(cfg)
    dev = store.add_device(fp)
    entries, last_chans, final_size = layer_entries(space, res)
    key = dict(batch=cfg.batch_size, resolution=res, precision=cfg.precision, ep=cfg.ep)
    have = store.measured_layers(dev, cfg.space, **key)
    measure = _measurer(store, cfg, dev, res)
    baselines: dict[tuple, float] = {}

    def baseline(shape) -> float:
        if shape not in baselines:
            baselines[shape] = measure(identity_onnx(shape)).median_ms
        return baselines[shape]

    todo = [e for e in entries if (e[0], e[1].name, e[2]) not in have]
    last = max(last_chans)
    fixed_todo = (OVERHEAD_LAYER, OVERHEAD_OP, last) not in have
    total, done, written = len(todo) + fixed_todo, 0, 0
    b = cfg.batch_size
    for i, op, ch, size in todo:
        lp = plan_layer(space.layers[i], op, ch, size)
        row = {"space": cfg.space, "layer": i, "op": op.name, "in_channels": ch, **key}
        try:
            m = measure(layer_onnx(lp, b))
            base = baseline((b, ch, size, size))
            row.update(status="ok", median_ms=max(m.median_ms - base, 0.0), mean_ms=max(m.mean_ms - base, 0.0),
                       std_ms=m.std_ms, p10_ms=max(m.p10_ms - base, 0.0), p90_ms=max(m.p90_ms - base, 0.0),
                       runs=m.runs, baseline_ms=base)
        except (HwnasError, RuntimeError, ValueError) as e:
            logger.warning("layer %d %s (in %d) failed: %s", i, op.name, ch, e)
            row.update(status="error", error=f"{type(e).__name__}: {e}")
        written += store.add_layer_row(dev, row)
        done += 1
        if on_row:
            on_row(done, total)
    if fixed_todo:
        stem_b, head_b = fixed_onnx(space, res, last, final_size, b)
        s, h = measure(stem_b), measure(head_b)
        base = baseline((b, last, final_size, final_size))
        written += store.add_layer_row(dev, {
            "space": cfg.space, "layer": OVERHEAD_LAYER, "op": OVERHEAD_OP, "in_channels": last, **key,
            "status": "ok", "median_ms": s.median_ms + max(h.median_ms - base, 0.0),
            "mean_ms": s.mean_ms + max(h.mean_ms - base, 0.0), "std_ms": (s.std_ms ** 2 + h.std_ms ** 2) ** 0.5,
            "p10_ms": None, "p90_ms": None, "runs": min(s.runs, h.runs), "baseline_ms": base})
        if on_row:
            on_row(total, total)
    return written


def _measurer(store, cfg, dev: str, resolution: int):
    """``measure(onnx) -> statistics`` of the campaign's protocol: with the canary (default)
    each layer model is timed against the device's canary and its statistics are put on the
    calibrated scale (x ratio x reference / raw median), so a lookup table sums numbers of
    the same scale as the arch rows; with ``--no-canary`` plain timing."""
    from types import SimpleNamespace

    from hwnas.profiling.runner import measure as plain

    if not cfg.canary:
        return lambda data: plain(data, **cfg.measure_kwargs())
    from hwnas.profiling.campaign import campaign_canary, open_timer
    from hwnas.profiling.contention import calibrated_ms, gamma_of

    canary, stored = campaign_canary(store, cfg, dev, resolution)
    timer = open_timer(canary, cfg)
    ref, gamma = stored["reference_ms"], gamma_of(stored)

    def paired(data):
        p = timer.measure(data, runs=cfg.runs, time_budget_s=cfg.time_budget_s)
        ms = calibrated_ms(p.ratio, p.canary_median_ms, ref, gamma)
        k = ms / p.arch.median_ms
        a = p.arch
        return SimpleNamespace(median_ms=ms, mean_ms=a.mean_ms * k, std_ms=a.std_ms * k,
                               p10_ms=a.p10_ms * k, p90_ms=a.p90_ms * k, runs=a.runs)

    return paired
