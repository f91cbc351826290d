"""The concrete layer-by-layer shapes of one architecture, without torch.

Why one plan: the network builder, the analytic cost model, the supernet and the
predictor's per-layer features must agree on every channel count and stride; they all
read this plan instead of re-deriving it.

Rules (documented once, here):
- conv padding is ``k // 2``, so a stride-``s`` layer maps ``h`` to ``ceil(h / s)``;
- a layer's output channels are ``make_divisible(stage_channels * width, 8)``;
- the hidden (expanded) width is ``round(in_channels * expansion)``, exactly as in FBNet;
- ``skip`` is the identity, except on the first layer of a stage whose stride or
  channel count changes the shape: there it is the cheapest projection, a 1x1 conv with
  the layer's stride followed by BN (no activation);
- an MBConv/split-attention block adds its input back (residual) when stride is 1 and
  input and output channels are equal.
"""
from __future__ import annotations

from dataclasses import dataclass

from hwnas.space._ops import Op
from hwnas.space._space import Arch, Layer, SearchSpace


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% down (MobileNet)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_out(size: int, stride: int) -> int:
    return -(-size // stride)


@dataclass(frozen=True)
class LayerPlan:
    op: Op
    in_channels: int
    out_channels: int
    hidden: int  # expanded width (0 for skip)
    stride: int
    in_size: int  # spatial side of the input
    out_size: int
    residual: bool
    projection: bool  # skip realised as 1x1 conv + BN


@dataclass(frozen=True)
class NetPlan:
    resolution: int
    in_channels: int
    stem_channels: int
    stem_kernel: int
    stem_stride: int
    stem_size: int  # spatial side after the stem
    layers: tuple[LayerPlan, ...]
    head_channels: int  # 0: no head conv
    last_channels: int  # channels entering the pool
    final_size: int
    num_classes: int


def plan_arch(space: SearchSpace, arch: Arch, resolution: int | None = None, num_classes: int | None = None) -> NetPlan:
    """Shapes of every layer of ``arch`` at ``resolution`` (validated against the space)."""
    res = space.resolution(arch, resolution)
    stem = space.stem
    size = conv_out(res, stem.stride)
    stem_size = size
    ch = stem.channels
    layers = []
    for layer, op in zip(space.layers, space.layer_ops(arch)):
        lp = plan_layer(layer, op, ch, size)
        layers.append(lp)
        ch, size = lp.out_channels, lp.out_size
    last = space.head_channels or ch
    return NetPlan(
        resolution=res, in_channels=space.in_channels, stem_channels=stem.channels,
        stem_kernel=stem.kernel, stem_stride=stem.stride, stem_size=stem_size,
        layers=tuple(layers), head_channels=space.head_channels, last_channels=last,
        final_size=size, num_classes=space.num_classes if num_classes is None else int(num_classes),
    )


def plan_layer(layer: Layer, op: Op, ch: int, size: int) -> LayerPlan:
    """Shapes of one layer given its input channels and spatial side."""
    if op.skip:
        shape_changes = layer.first_in_stage and (layer.stride != 1 or ch != layer.channels)
        if not shape_changes:
            return LayerPlan(op, ch, ch, 0, 1, size, size, False, False)
        return LayerPlan(op, ch, layer.channels, 0, layer.stride, size, conv_out(size, layer.stride), False, True)
    out_ch = make_divisible(layer.channels * op.width)
    residual = layer.stride == 1 and ch == out_ch
    return LayerPlan(op, ch, out_ch, int(round(ch * op.expansion)), layer.stride, size,
                     conv_out(size, layer.stride), residual, False)


def se_channels(hidden: int) -> int:
    """Squeeze-excitation bottleneck width (a quarter, at least 8)."""
    return max(8, hidden // 4)


def sa_channels(hidden: int, radix: int) -> int:
    """Split-attention bottleneck width (ResNeSt uses in*radix/4, at least 32; we scale
    the floor down to 8 because our layers are narrower)."""
    return max(8, hidden * radix // 4)
