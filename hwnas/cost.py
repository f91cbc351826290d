"""Analytic FLOPs and parameter counts of an ``Arch``, without building the network.

Convention: ``flops`` counts **multiply-adds** (one MAC = one FLOP, the convention of
FBNet, MobileNet and most NAS papers) of every convolution and the classifier; BN,
activations, pooling, softmax and element-wise products/additions are not counted.
``torch.utils.flop_counter.FlopCounterMode`` counts 2 per MAC, so it reports twice our
number (the test compares against half of it).

``params`` counts learnable parameters as ``sum(p.numel())`` does: conv and linear
weights, their biases where present, and BN's weight and bias (not running stats).

Per-layer costs also give the memory traffic (input + output activations + weights, in
elements) that latency predictors use as features: on CPUs, depthwise and 1x1 layers are
often bound by memory, not MACs.
"""
from __future__ import annotations

from dataclasses import dataclass

from hwnas.space import Arch, LayerPlan, SearchSpace, plan_arch
from hwnas.space._plan import conv_out, sa_channels, se_channels


@dataclass(frozen=True)
class LayerCost:
    flops: int  # multiply-adds
    params: int
    in_elems: int  # input activation elements (batch 1)
    out_elems: int  # output activation elements (batch 1)

    @property
    def traffic(self) -> int:
        """Elements read and written: input, output and weights."""
        return self.in_elems + self.out_elems + self.params


@dataclass(frozen=True)
class ArchCost:
    flops: int
    params: int
    activations: int  # sum of layer output elements (batch 1)
    layers: tuple[LayerCost, ...]  # searchable layers only, in order
    fixed: LayerCost  # stem + head + classifier


def _conv(cin: int, cout: int, k: int, groups: int, out_size: int, bias: bool = False, bn: bool = True):
    macs = cout * (cin // groups) * k * k * out_size * out_size
    params = cout * (cin // groups) * k * k + (cout if bias else 0) + (2 * cout if bn else 0)
    return macs, params


def layer_cost(p: LayerPlan) -> LayerCost:
    """MACs and params of one planned layer (mirrors ``hwnas.nn.blocks``)."""
    in_elems = p.in_channels * p.in_size ** 2
    out_elems = p.out_channels * p.out_size ** 2
    if p.op.skip:
        if not p.projection:
            return LayerCost(0, 0, in_elems, out_elems)
        m, q = _conv(p.in_channels, p.out_channels, 1, 1, p.out_size)
        return LayerCost(m, q, in_elems, out_elems)
    op, h = p.op, p.hidden
    parts = [_conv(p.in_channels, h, 1, op.groups, p.in_size)]
    if op.radix:
        r, mid = op.radix, sa_channels(h, op.radix)
        parts += [_conv(h, h * r, op.kernel, h, p.out_size),
                  _conv(h, mid, 1, 1, 1, bias=True, bn=False), _conv(mid, h * r, 1, 1, 1, bias=True, bn=False)]
    else:
        parts.append(_conv(h, h, op.kernel, h, p.out_size))
    if op.se:
        mid = se_channels(h)
        parts += [_conv(h, mid, 1, 1, 1, bias=True, bn=False), _conv(mid, h, 1, 1, 1, bias=True, bn=False)]
    parts.append(_conv(h, p.out_channels, 1, op.groups, p.out_size))
    return LayerCost(sum(m for m, _ in parts), sum(q for _, q in parts), in_elems, out_elems)


def arch_cost(space: SearchSpace, arch: Arch | str, resolution: int | None = None,
              num_classes: int | None = None) -> ArchCost:
    """FLOPs (multiply-adds), params and per-layer costs of ``arch``."""
    plan = plan_arch(space, space.parse(arch), resolution, num_classes)
    layers = tuple(layer_cost(p) for p in plan.layers)
    last = plan.layers[-1].out_channels if plan.layers else plan.stem_channels
    fixed, fixed_act = fixed_cost(space, plan.resolution, last, plan.num_classes)
    return ArchCost(
        flops=fixed.flops + sum(c.flops for c in layers),
        params=fixed.params + sum(c.params for c in layers),
        activations=fixed_act + sum(c.out_elems for c in layers),
        layers=layers,
        fixed=fixed,
    )


def fixed_cost(space: SearchSpace, resolution: int, last: int, num_classes: int) -> tuple[LayerCost, int]:
    """Stem + head conv + classifier, and their output activations: the part of every arch
    that no decision changes except through ``last`` (the channels entering the head), which
    is why the cost extremes, the expected-FLOPs penalty and the predictors' cost tables all
    add it once per reachable ``last`` instead of re-planning whole archs."""
    stem = space.stem
    stem_size = conv_out(resolution, stem.stride)
    final = stem_size
    for layer in space.layers:
        final = conv_out(final, layer.stride)
    m, q = _conv(space.in_channels, stem.channels, stem.kernel, 1, stem_size)
    act = stem.channels * stem_size ** 2
    if space.head_channels:
        hm, hq = _conv(last, space.head_channels, 1, 1, final)
        m, q, act = m + hm, q + hq, act + space.head_channels * final ** 2
        last = space.head_channels
    m += last * num_classes
    q += last * num_classes + num_classes
    return LayerCost(m, q, space.in_channels * resolution ** 2, num_classes), act


def cost_extremes(space: SearchSpace, key: str = "flops") -> tuple[tuple[int, Arch], tuple[int, Arch]]:
    """The exact cheapest and most expensive architecture by ``flops`` or ``params``.

    Why exact and cheap: a layer's cost depends only on its op and its input channels,
    so a dynamic programme over the (resolution, input channels) states of
    ``hwnas.cost_table.CostTable`` visits a handful of states per layer instead of the
    10^21 architectures of the space.
    """
    from hwnas.cost_table import CostTable

    if key not in ("flops", "params"):
        raise ValueError(f"key must be 'flops' or 'params', got {key!r}")
    table = CostTable(space)
    results = []
    for sign in (1, -1):  # 1: cheapest, -1: most expensive
        # state index -> (cost so far, tokens); the first token names the resolution when searched
        states = {s: (0, (f"r{r}",) if table.offset else ()) for s, (r, _) in enumerate(table.states[0])}
        for i, layer in enumerate(space.layers):
            costs, nxt = table.tables[i][key], table.next_state[i]
            new: dict[int, tuple[int, tuple]] = {}
            for s, (total, toks) in states.items():
                for j, op in enumerate(layer.ops):
                    cand = (total + int(costs[s, j]), toks + (op.name,))
                    old = new.get(int(nxt[s, j]))
                    if old is None or sign * cand[0] < sign * old[0]:
                        new[int(nxt[s, j])] = cand
            states = new
        total, toks = min(((t + int(table.fixed[key][s]), toks) for s, (t, toks) in states.items()),
                          key=lambda c: sign * c[0])
        results.append((total, Arch(space.name, toks)))
    return results[0], results[1]
