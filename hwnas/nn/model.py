"""``Arch -> torch.nn.Module``: stem, the planned layers, head, pool, classifier."""
from __future__ import annotations

import torch
from torch import nn

from hwnas.nn.blocks import ConvBNAct, build_layer
from hwnas.space import Arch, NetPlan, SearchSpace, plan_arch


class Network(nn.Module):
    """A stand-alone network for one architecture (exports to ONNX on its own)."""

    def __init__(self, plan: NetPlan):
        super().__init__()
        self.plan = plan
        self.stem = ConvBNAct(plan.in_channels, plan.stem_channels, plan.stem_kernel, plan.stem_stride)
        self.layers = nn.Sequential(*(build_layer(p) for p in plan.layers))
        last = plan.layers[-1].out_channels if plan.layers else plan.stem_channels
        self.head = ConvBNAct(last, plan.head_channels, 1) if plan.head_channels else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(plan.last_channels, plan.num_classes)

    def forward(self, x):
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


def build_model(space: SearchSpace, arch: Arch | str, resolution: int | None = None,
                num_classes: int | None = None) -> Network:
    """Build ``arch`` of ``space`` (weights from torch's default init; seed torch first)."""
    arch = space.parse(arch)
    return Network(plan_arch(space, arch, resolution, num_classes))


def to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images ``x`` (NCHW) at ``resolution`` x ``resolution``, bilinear, corners not aligned.
    Why one function: a searchable-resolution supernet is fed its data at the largest
    resolution and resizes them per path (``Supernet.forward``, the relaxed forward), and a
    stand-alone network trained on those data must see them resized the same way."""
    if tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
