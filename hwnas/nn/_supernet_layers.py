"""Weight storage of the supernet: one slot per searchable layer, widest weights, and the
slicing rule that turns them into the exact tensors of ``hwnas.nn.blocks.build_layer(p)``.

Sharing rules (each slot allocates the maximum over every op of the layer and every input
width that earlier layers can produce, then slices):

- **channels** (width, expansion, reachable input widths): the first ``c`` channels of the
  widest tensor, ``w[:cout, :cin]`` (OFA's channel sorting idea without the sorting;
  FBNetV2's DMaskingNAS masks the same leading channels).
- **kernel**: the centre ``k x k`` of the largest ``kmax x kmax`` depthwise kernel (OFA,
  Cai et al. ICLR 2020, Sec. 3.2 "elastic kernel size"; we omit OFA's learned kernel
  transformation matrices, so a 3x3 path and the centre of a 5x5 path are the same weights).
- **groups** (FBNet's ``_g2``): a grouped 1x1 conv is a block-diagonal dense conv, so group
  ``j`` takes the diagonal block ``w[j*o:(j+1)*o, j*i:(j+1)*i]`` of the shared dense weight;
  grouped and dense ops of a slot share those blocks.
- **block type**: MBConv and split-attention ops of a slot share the expand and project
  1x1 convs and the SE weights; only the spatial op differs (a depthwise conv, or the
  split-attention module), as in FBNetV2/FP-NAS where the block type is one more dimension.
- **split-attention radix**: the conv weight is laid out ``(hidden, rmax, k, k)``, so radix
  ``r`` uses splits ``[:r]`` of each channel (ResNeSt's channel ``c*r + i`` is split ``i``
  of channel ``c``); the attention FCs are sliced the same way.  The BN after that conv is
  *private per radix* (switchable BN, Yu et al. "Slimmable networks", ICLR 2019): the
  statistics of a split change with the number of splits, and a private BN keeps every
  running-statistic slice a contiguous prefix that BN can update in place.
- **skip projection** (1x1 conv + BN on a stage's first layer): its own weights, input
  channels sliced.

BatchNorm slices share affine parameters and running statistics; see ``supernet.py`` for
why running statistics must be recalibrated per path before they mean anything.

**Private BN** (opt-in, ``private`` positions out of ``BN_POSITIONS``): at a named position
the slot holds one BN *per op choice* instead of one shared by every choice (a
``ModuleDict`` ``<position>_bns`` keyed by ``bn_key(op.name)``), sized to the widest tensor
that op produces there.  Why: BN-NAS (Chen et al., ICCV 2021, arXiv 2108.07375) ranks
choices by the |gamma| of the BN after each candidate's last 1x1 conv, which only tells
choices apart when every choice owns that BN (its official supernet has one BN per
candidate block; ``bychen515/BNNAS : supernet/torch_blocks.py``).  Positions:
``expand`` (after the expand 1x1 conv), ``spatial`` (after the depthwise conv, or the
split-attention conv, which is then private per op rather than per radix) and
``project`` (after the project 1x1 conv, BN-NAS's position).  A private BN is still
shared by the paths that pick the same op with different input widths (leading
channels, as above).  The skip projection's BN is private to ``skip`` already.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.space import Layer, LayerPlan, Op
from hwnas.space._plan import plan_layer, sa_channels, se_channels


BN_POSITIONS = ("expand", "spatial", "project")


def bn_key(op_name: str) -> str:
    """``ModuleDict`` key of an op's private BN: the op name with ``.`` (not allowed in a
    module name) written as ``p`` (``k3_e2_w0.5`` -> ``k3_e2_w0p5``)."""
    return op_name.replace(".", "p")


def conv_weight(cout: int, cin: int, k1: int = 1, k2: int | None = None) -> nn.Parameter:
    """He-normal (fan-out) init, as torchvision's MobileNetV2/MNASNet do for convs."""
    k2 = k1 if k2 is None else k2
    w = torch.empty(cout, cin, k1, k2)
    nn.init.normal_(w, 0.0, math.sqrt(2.0 / (cout * k1 * k2)))
    return nn.Parameter(w)


def bn_tensors(bn: nn.BatchNorm2d, n: int, prefix: str) -> dict[str, torch.Tensor]:
    """The first ``n`` channels of a shared BN, as a ``BatchNorm2d(n)`` state."""
    return {
        f"{prefix}.weight": bn.weight[:n], f"{prefix}.bias": bn.bias[:n],
        f"{prefix}.running_mean": bn.running_mean[:n], f"{prefix}.running_var": bn.running_var[:n],
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked,
    }


def dense_1x1(w: torch.Tensor, cout: int, cin: int, groups: int) -> torch.Tensor:
    """``(cout, cin // groups, 1, 1)`` weight of a (grouped) 1x1 conv from a dense one."""
    if groups == 1:
        return w[:cout, :cin]
    o, i = cout // groups, cin // groups
    return torch.cat([w[j * o:(j + 1) * o, j * i:(j + 1) * i] for j in range(groups)], 0)


def centre(w: torch.Tensor, k: int) -> torch.Tensor:
    s = (w.shape[-1] - k) // 2
    return w[..., s:s + k, s:s + k]


class SuperLayer(nn.Module):
    """Storage for one searchable layer slot; ``tensors(p)`` gives ``build_layer(p)``'s state."""

    def __init__(self, layer: Layer, in_channels: set[int] | frozenset[int], private: frozenset[str] = frozenset()):
        super().__init__()
        self.private = frozenset(private)
        plans = [plan_layer(layer, op, ch, 1) for ch in sorted(in_channels) for op in layer.ops]
        blocks = [p for p in plans if not p.op.skip]
        mb = [p for p in blocks if not p.op.radix]
        sa = [p for p in blocks if p.op.radix]
        se = [p for p in blocks if p.op.se]
        proj = [p for p in plans if p.projection]
        self.out_channels = frozenset(p.out_channels for p in plans)
        if blocks:
            cin = max(p.in_channels for p in blocks)
            hid = max(p.hidden for p in blocks)
            cout = max(p.out_channels for p in blocks)
            self.expand_w = conv_weight(hid, cin)
            if "expand" in self.private:
                self.expand_bns = _private_bns(blocks, lambda p: p.hidden)
            else:
                self.expand_bn = nn.BatchNorm2d(hid)
            self.project_w = conv_weight(cout, hid)
            if "project" in self.private:
                self.project_bns = _private_bns(blocks, lambda p: p.out_channels)
            else:
                self.project_bn = nn.BatchNorm2d(cout)
        if mb:
            h, k = max(p.hidden for p in mb), max(p.op.kernel for p in mb)
            self.dw_w = conv_weight(h, 1, k)
            if "spatial" in self.private:
                self.dw_bns = _private_bns(mb, lambda p: p.hidden)
            else:
                self.dw_bn = nn.BatchNorm2d(h)
        if sa:
            h, k = max(p.hidden for p in sa), max(p.op.kernel for p in sa)
            rmax = max(p.op.radix for p in sa)
            mid = max(sa_channels(p.hidden, p.op.radix) for p in sa)
            self.sa_w = nn.Parameter(conv_weight(h * rmax, 1, k).detach().reshape(h, rmax, k, k))
            if "spatial" in self.private:
                self.sa_bns = _private_bns(sa, lambda p: p.hidden * p.op.radix)
            else:
                self.sa_bn = nn.ModuleDict({str(r): nn.BatchNorm2d(h * r) for r in sorted({p.op.radix for p in sa})})
            self.fc1_w = conv_weight(mid, h)
            self.fc1_b = nn.Parameter(torch.zeros(mid))
            self.fc2_w = nn.Parameter(conv_weight(h * rmax, mid).detach().reshape(h, rmax, mid))
            self.fc2_b = nn.Parameter(torch.zeros(h, rmax))
        if se:
            h = max(p.hidden for p in se)
            mid = max(se_channels(p.hidden) for p in se)
            self.se_reduce_w = conv_weight(mid, h)
            self.se_reduce_b = nn.Parameter(torch.zeros(mid))
            self.se_expand_w = conv_weight(h, mid)
            self.se_expand_b = nn.Parameter(torch.zeros(h))
        if proj:
            self.proj_w = conv_weight(layer.channels, max(p.in_channels for p in proj))
            self.proj_bn = nn.BatchNorm2d(layer.channels)

    def tensors(self, p: LayerPlan) -> dict[str, torch.Tensor]:
        """State of ``build_layer(p)`` as slices (views where possible) of this slot."""
        op = p.op
        if op.skip:
            if not p.projection:
                return {}
            return {"0.weight": self.proj_w[:p.out_channels, :p.in_channels], **bn_tensors(self.proj_bn, p.out_channels, "1")}
        h, g = p.hidden, op.groups
        t = {"expand.0.weight": dense_1x1(self.expand_w, h, p.in_channels, g)}
        t.update(bn_tensors(self.bn("expand", op), h, "expand.1"))
        if op.radix:
            r, k = op.radix, op.kernel
            mid = sa_channels(h, r)
            t["spatial.conv.0.weight"] = centre(self.sa_w[:h, :r], k).reshape(h * r, 1, k, k)
            t.update(bn_tensors(self.bn("spatial", op), h * r, "spatial.conv.1"))
            t["spatial.fc1.weight"] = self.fc1_w[:mid, :h]
            t["spatial.fc1.bias"] = self.fc1_b[:mid]
            t["spatial.fc2.weight"] = self.fc2_w[:h, :r, :mid].reshape(h * r, mid, 1, 1)
            t["spatial.fc2.bias"] = self.fc2_b[:h, :r].reshape(h * r)
        else:
            t["spatial.0.weight"] = centre(self.dw_w[:h], op.kernel)
            t.update(bn_tensors(self.bn("spatial", op), h, "spatial.1"))
        if op.se:
            mid = se_channels(h)
            t["se.reduce.weight"] = self.se_reduce_w[:mid, :h]
            t["se.reduce.bias"] = self.se_reduce_b[:mid]
            t["se.expand.weight"] = self.se_expand_w[:h, :mid]
            t["se.expand.bias"] = self.se_expand_b[:h]
        t["project.0.weight"] = dense_1x1(self.project_w, p.out_channels, h, g)
        t.update(bn_tensors(self.bn("project", op), p.out_channels, "project.1"))
        return t

    def bn(self, position: str, op: Op) -> nn.BatchNorm2d:
        """The BN that ``op`` (not ``skip``) uses at ``position`` (one of ``BN_POSITIONS``):
        the slot's shared one, or the op's own when the position is private."""
        if position == "spatial":
            if op.radix:
                return self.sa_bns[bn_key(op.name)] if "spatial" in self.private else self.sa_bn[str(op.radix)]
            return self.dw_bns[bn_key(op.name)] if "spatial" in self.private else self.dw_bn
        if position in self.private:
            return getattr(self, f"{position}_bns")[bn_key(op.name)]
        return getattr(self, f"{position}_bn")


def _private_bns(plans: list[LayerPlan], size) -> nn.ModuleDict:
    """One BN per op of ``plans``, as wide as the widest ``size(plan)`` over its input widths."""
    widths: dict[str, int] = {}
    for p in plans:
        widths[p.op.name] = max(widths.get(p.op.name, 0), size(p))
    return nn.ModuleDict({bn_key(name): nn.BatchNorm2d(n) for name, n in widths.items()})


def reachable_channels(space) -> list[frozenset[int]]:
    """Per layer, every input channel count that some architecture feeds it."""
    out, chans = [], frozenset({space.stem.channels})
    for layer in space.layers:
        out.append(chans)
        chans = frozenset(plan_layer(layer, op, ch, 1).out_channels for ch in chans for op in layer.ops)
    out.append(chans)  # channels after the last layer
    return out
