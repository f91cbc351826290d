"""BN-NAS's supernet side: train only BatchNorm, and score an arch from BN weights alone.

BN-NAS (Chen et al., "BN-NAS: Neural Architecture Search with Batch Normalization",
ICCV 2021, arXiv 2108.07375) observes that the BN scale |gamma| after a candidate op
reflects how much the supernet relies on it, and that this ranking already emerges when
*only* BN parameters train (abstract [paper]: "more than 10x faster" supernet training,
"more than 600,000x faster" subnet evaluation).  Read in the authors' code,
``bychen515/BNNAS @ 6570c92`` [code]:

- ``supernet/main.py`` trains only ``'7.weight'`` / ``'7.bias'``, the gamma and beta of
  the *last* BN of every candidate block (after its linear 1x1 projection); every conv,
  the stem/head BNs, the other BNs and the classifier stay at their init.  That is
  ``train_only_bn(net, "last")``; ``"all"`` trains every BN (the abstract's wording).
- ``search/ea.py`` (``bn_matrix``, ``get_bn_scores``): ``score(arch) = sum over layers of
  mean_c |gamma_{l, o_l, c}|`` of that last BN, identity contributing 0.  That is
  ``bn_indicator(net, arch)`` with the defaults.  No data is needed.

Why private BN: hwnas's supernet shares one BN per position across a slot's choices, so
choices differing in kernel or SE would have the same gamma; the indicator therefore
refuses a position that is not private (``Supernet(..., private_bn=("project",))``).

Skip (hwnas extension, not in the paper): BN-NAS fixes depth (its identity layers never
compete with blocks), so "identity scores 0" never decides anything there.  In a space
with skippable layers, ``reduce="sum"`` lets skip always lose; ``reduce="mean"`` averages
over the layers that have a BN, which ranks like the sum when depth is fixed and leaves
depth to the budget otherwise.  A skip that is a 1x1 projection (first layer of a stage)
has a BN after that conv; it counts as that layer's ``project`` BN.
"""
from __future__ import annotations

import torch
from torch import nn

from hwnas.errors import TrainError, valid_list
from hwnas.nn._supernet_layers import BN_POSITIONS

__all__ = ["BN_TRAINABLE", "INDICATOR_REDUCE", "bn_indicator", "bn_layer_scores", "train_only_bn"]

BN_TRAINABLE = ("last", "all")
INDICATOR_REDUCE = ("sum", "mean")


def train_only_bn(net, which: str = "last") -> list[nn.Parameter]:
    """Freeze every parameter of supernet ``net`` except BN affine parameters; return the
    trainable ones (give those to the optimizer).

    ``which="last"`` (BN-NAS's official filter): the BN after each choice's last 1x1 conv,
    i.e. every project BN (shared or private) and the skip projection's BN.  ``"all"``:
    every BN of the supernet, stem and head included.  Frozen parameters get
    ``requires_grad=False``, so they get no gradient and an optimizer given *all*
    parameters (momentum, weight decay) still leaves them bit-identical.  Undo with
    ``net.requires_grad_(True)``.
    """
    if which not in BN_TRAINABLE:
        raise TrainError(f"train_only_bn: which must be one of {valid_list(BN_TRAINABLE)}; got {which!r}")
    net.requires_grad_(False)
    if which == "all":
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    else:
        bns = []
        for slot in net.slots:
            if hasattr(slot, "project_bns"):
                bns += list(slot.project_bns.values())
            elif hasattr(slot, "project_bn"):
                bns.append(slot.project_bn)
            if hasattr(slot, "proj_bn"):
                bns.append(slot.proj_bn)
    params = [p for bn in bns for p in (bn.weight, bn.bias) if p is not None]
    for p in params:
        p.requires_grad_(True)
    return params


@torch.no_grad()
def bn_layer_scores(net, arch, positions: tuple[str, ...] | str = ("project",)) -> list[float | None]:
    """Per searchable layer of ``arch``: the mean over ``positions`` of ``mean_c |gamma_c|``
    of the BN that the layer's chosen op uses there, over the path's own channels (the
    slice ``arch`` runs); ``None`` for an identity skip (no BN)."""
    positions = _check_positions(net, positions)
    out: list[float | None] = []
    for slot, p in zip(net.slots, net.plan(arch).layers):
        if p.op.skip:
            out.append(float(slot.proj_bn.weight[:p.out_channels].abs().mean())
                       if p.projection and "project" in positions else None)
            continue
        vals = []
        for pos in positions:
            n = {"expand": p.hidden, "project": p.out_channels}.get(pos, p.hidden * max(p.op.radix, 1))
            vals.append(float(slot.bn(pos, p.op).weight[:n].abs().mean()))
        out.append(sum(vals) / len(vals))
    return out


def bn_indicator(net, arch, positions: tuple[str, ...] | str = ("project",), reduce: str = "sum") -> float:
    """BN-NAS's data-free score of ``arch`` (higher is better): the layers' ``bn_layer_scores``
    summed (``"sum"``, the paper's; an identity skip adds 0) or averaged over the layers that
    have a BN (``"mean"``, for spaces with skippable layers; see the module docstring).

    ``positions`` must be private in ``net`` (``Supernet(..., private_bn=positions)``):
    shared BN parameters cannot tell a slot's choices apart."""
    if reduce not in INDICATOR_REDUCE:
        raise TrainError(f"bn_indicator: reduce must be one of {valid_list(INDICATOR_REDUCE)}; got {reduce!r}")
    scores = [s for s in bn_layer_scores(net, arch, positions) if s is not None]
    if not scores:
        return 0.0
    return sum(scores) / len(scores) if reduce == "mean" else sum(scores)


def _check_positions(net, positions) -> tuple[str, ...]:
    positions = (positions,) if isinstance(positions, str) else tuple(positions)
    bad = [p for p in positions if p not in BN_POSITIONS]
    if bad or not positions:
        raise TrainError(f"BN indicator: unknown BN position {bad[0] if bad else None!r}; "
                         f"valid: {valid_list(BN_POSITIONS)}")
    shared = [p for p in positions if p not in net.private_bn]
    if shared:
        raise TrainError(f"BN indicator: BN position {shared[0]!r} is shared by every choice of a slot; build "
                         f"Supernet(..., private_bn={positions!r}) (this one has private_bn={net.private_bn!r})")
    return positions
