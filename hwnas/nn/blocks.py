"""Building blocks: conv-BN-act, channel shuffle, squeeze-excitation, split-attention,
and the MBConv block that composes them (FBNet Fig. 2, FBNetV2/FP-NAS, ResNeSt).

Every shape comes from ``hwnas.space.LayerPlan`` so that the cost model, the ONNX graph
and the supernet agree with what is built here.
"""
from __future__ import annotations

import torch
from torch import nn

from hwnas.space import LayerPlan
from hwnas.space._plan import sa_channels, se_channels


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BN, then ReLU unless ``act=False``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: FBNet puts one after a grouped 1x1 conv so that the
    groups of the next grouped conv mix information."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation (Hu et al. 2018): channel gates from the global average."""

    def __init__(self, channels: int):
        super().__init__()
        mid = se_channels(channels)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * torch.sigmoid(s)


class SplitAttention(nn.Module):
    """ResNeSt split-attention depthwise conv (Zhang et al. 2020) with ``radix`` splits.

    A depthwise conv makes ``radix`` feature maps per channel; their sum is pooled and
    passed through a two-layer bottleneck that yields one weight per (channel, split),
    normalised by a softmax over the splits (a sigmoid when radix is 1); the output is
    the weighted sum of the splits.  Channel ``c * radix + r`` of the conv is split ``r``
    of channel ``c``.
    """

    def __init__(self, channels: int, kernel: int, stride: int, radix: int):
        super().__init__()
        self.radix = radix
        self.conv = ConvBNAct(channels, channels * radix, kernel, stride, groups=channels)
        mid = sa_channels(channels, radix)
        self.fc1 = nn.Conv2d(channels, mid, 1)
        self.fc2 = nn.Conv2d(mid, channels * radix, 1)

    def forward(self, x):
        y = self.conv(x)
        b, cr, h, w = y.shape
        c = cr // self.radix
        splits = y.view(b, c, self.radix, h, w)
        gap = splits.sum(2).mean((2, 3), keepdim=True)
        att = self.fc2(torch.relu(self.fc1(gap))).view(b, c, self.radix, 1, 1)
        att = torch.softmax(att, dim=2) if self.radix > 1 else torch.sigmoid(att)
        return (splits * att).sum(2)


class MBConv(nn.Module):
    """Inverted residual: 1x1 (grouped) expand -> [shuffle] -> depthwise or
    split-attention kxk -> [SE] -> 1x1 (grouped) project + BN -> [+ input]."""

    def __init__(self, p: LayerPlan):
        super().__init__()
        op = p.op
        g = op.groups
        self.expand = ConvBNAct(p.in_channels, p.hidden, 1, groups=g)
        self.shuffle = ChannelShuffle(g) if g > 1 else nn.Identity()
        if op.radix:
            self.spatial = SplitAttention(p.hidden, op.kernel, p.stride, op.radix)
        else:
            self.spatial = ConvBNAct(p.hidden, p.hidden, op.kernel, p.stride, groups=p.hidden)
        self.se = SqueezeExcite(p.hidden) if op.se else nn.Identity()
        self.project = ConvBNAct(p.hidden, p.out_channels, 1, groups=g, act=False)
        self.residual = p.residual

    def forward(self, x):
        y = self.project(self.se(self.spatial(self.shuffle(self.expand(x)))))
        return x + y if self.residual else y


def build_layer(p: LayerPlan) -> nn.Module:
    """The module for one planned layer (``skip`` is identity or a 1x1 projection)."""
    if p.op.skip:
        if p.projection:
            return ConvBNAct(p.in_channels, p.out_channels, 1, p.stride, act=False)
        return nn.Identity()
    return MBConv(p)
