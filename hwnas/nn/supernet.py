"""The weight-sharing supernet: one set of weights for a whole search space.

Why single-path: FBNet/DARTS-style supernets run every choice of a layer at once and mix
them, so memory grows with the number of choices; probabilistic NAS (PARSEC, Casale et al.
2019; FP-NAS, Yan et al. CVPR 2021) samples an architecture and runs *only its path*, so a
step costs one model's memory and compute.  Choices share weights by slicing the widest
tensors (OFA, Cai et al. ICLR 2020; FBNetV2's channel masking, Wan et al. CVPR 2020); the
rules are in ``_supernet_layers``.  A path is computed by running the very modules of
``hwnas.nn.blocks`` (built once per layer shape on the ``meta`` device, holding no memory)
on the sliced tensors with ``torch.func.functional_call``, so a path and the stand-alone
network ``get_active_subnet()`` returns cannot disagree.

OFA verbs (STYLE.md): ``set_active_subnet(arch)``, ``sample_active_subnet(generator)``,
``get_active_subnet()`` (a stand-alone ``hwnas.nn.model.Network`` with copied weights that
exports with ``profiling.onnx_graph.network_to_onnx``), and ``forward(x, arch=None)``.

Stem, head conv and classifier are shared by every path; when the last layer's width
varies, the head conv's (or, without a head conv, the classifier's) input is sliced.  For
spaces with a searchable resolution the input is resized (bilinear) to the arch's
resolution, so one data loader serves every resolution.

BatchNorm (the honest part).  Slices of one BN are shared by paths whose activations have
different statistics (a 3x3 and a 5x5 kernel, 2 or 6x expansion, a skipped predecessor),
so the running statistics accumulated while training the supernet average over paths and
are wrong for any single one (OFA Sec. 3.3; Guo et al. SPOS, ECCV 2020).  We therefore
- train with batch statistics (BN in train mode; the running statistics still update,
  but nothing trusts them);
- evaluate a path, by default, with **batch statistics of the evaluation batch**
  (``with net.batch_stats():``, used by ``evaluate_arch``): exact per path, stateless and
  free, which is what a search needs when it scores thousands of sampled paths; it needs
  evaluation batches of a reasonable size (>= 32 images) and is transductive;
- before a path's running statistics are *used* (eval mode, ``get_active_subnet()``,
  export), **recalibrate** them on a few training batches for that path
  (``recalibrate_bn(net, arch, loader, batches)``, as OFA does): a cumulative average over
  the batches, written into that path's BN slices only.
Eval mode without either reads whatever the slices hold (the training mixture, or the last
path recalibrated); ``get_active_subnet()`` copies exactly that, so the extracted network
always matches the supernet in eval mode.

Private BN (``private_bn=("project",)``, off by default).  Shared BN affine parameters
cannot tell choices apart; BN-NAS (Chen et al., ICCV 2021, arXiv 2108.07375) scores
choices by them, so the supernet can give each (slot, op choice) its own BN at named
positions (``BN_POSITIONS``; ``_supernet_layers`` documents the layout).  Paths, batch
statistics, recalibration, ``synced_bn()`` and ``get_active_subnet()`` are unchanged: a
path's tensors simply come from its op's BN.  Off, the state dict and every output are
exactly today's.  A saved state dict tells which positions were private
(``private_bn_from_state``), so a loader can rebuild the right supernet.

Relaxed forward (``forward_relaxed(x, gates)``, FBNetV2's masking): see ``hwnas.nn.relaxed``.
"""
from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hwnas.errors import ArchError, TrainError, valid_list
from hwnas.nn._supernet_layers import BN_POSITIONS, SuperLayer, bn_tensors, conv_weight, reachable_channels
from hwnas.nn.blocks import ConvBNAct, build_layer
from hwnas.nn.model import Network, to_resolution
from hwnas.nn.sync_bn import make_syncable
from hwnas.nn.supernet_train import evaluate_arch, recalibrate_bn, train_supernet_epoch
from hwnas.space import Arch, LayerPlan, NetPlan, SearchSpace, get_space, plan_arch

log = logging.getLogger(__name__)

__all__ = ["BN_POSITIONS", "Supernet", "evaluate_arch", "private_bn_from_state", "recalibrate_bn",
           "train_supernet_epoch"]

_PLAN_CACHE = 4096


class Supernet(nn.Module):
    """One set of weights for every architecture of ``space``; see the module docstring.

    ``num_classes`` defaults to the space's; ``resolution`` to its default resolution (for
    a searchable-resolution space it is the resolution of the data fed in, and each path
    resizes it to its own).  ``seed`` (optional) seeds the weight init without touching
    torch's global RNG.  The structure depends only on ``(space, num_classes)``, so a saved
    ``state_dict()`` loads into ``Supernet(space, num_classes, resolution)``.
    ``channels_last`` runs paths in NHWC memory layout: on CPU the depthwise-conv backward
    is ~3x faster that way, a whole epoch ~10% (``benchmarks/supernet_epoch.py``).

    ``private_bn`` names the BN positions (``"expand"``, ``"spatial"``, ``"project"``, or
    one of them as a string) where every op choice of a slot gets its own BN (BN-NAS's
    indicator needs ``("project",)``); default ``()``: one BN per position shared by all
    choices, as before.  The state-dict layout differs (``slots.<i>.project_bns.<op>.*``
    instead of ``slots.<i>.project_bn.*``), so a state dict only loads into a supernet
    with the same ``private_bn``; ``private_bn_from_state(state)`` reads it back.

    Multi-GPU (DDP): a path leaves some parameters unused (another radix's BN, SE weights
    of a path without SE, other ops' private BNs), so wrap with ``find_unused_parameters=True``.
    """

    def __init__(self, space: SearchSpace | str, num_classes: int | None = None, resolution: int | None = None,
                 *, seed: int | None = None, bn_momentum: float = 0.1, channels_last: bool = True,
                 private_bn: tuple[str, ...] | list[str] | str = ()):
        super().__init__()
        space = get_space(space) if isinstance(space, str) else space
        self.space = space
        self.private_bn = _check_private_bn(private_bn)
        self.num_classes = space.num_classes if num_classes is None else int(num_classes)
        self.resolution = space.resolution(None, resolution)
        self.bn_momentum = float(bn_momentum)
        self.channels_last = bool(channels_last)
        self._bn_mode: str | None = None  # None: follow self.training; "batch"; "calib"
        self._calib_momentum = 1.0
        self._sync_bn = False  # see synced_bn()
        self._plans: OrderedDict[Arch, NetPlan] = OrderedDict()
        self._active: Arch | None = None
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng:
            if seed is not None:
                torch.manual_seed(seed)
            self._build(space)

    def _build(self, space: SearchSpace) -> None:
        stem = space.stem
        self.stem = ConvBNAct(space.in_channels, stem.channels, stem.kernel, stem.stride)
        self.stem[0].weight = conv_weight(stem.channels, space.in_channels, stem.kernel)
        make_syncable(_bns(self.stem))
        ins = reachable_channels(space)
        private = frozenset(self.private_bn)
        self.slots = nn.ModuleList(SuperLayer(layer, chans, private) for layer, chans in zip(space.layers, ins))
        last_max = max(ins[-1])
        if space.head_channels:
            self.head_w = conv_weight(space.head_channels, last_max)
            self.head_bn = nn.BatchNorm2d(space.head_channels)
            cls_in = space.head_channels
        else:
            cls_in = last_max
        self.classifier = nn.Linear(cls_in, self.num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    # -- OFA verbs ------------------------------------------------------------
    def set_active_subnet(self, arch: Arch | str) -> Arch:
        """Make ``arch`` the path that ``forward`` runs (validated against the space)."""
        arch = self.space.parse(arch)
        self.plan(arch)
        self._active = arch
        return arch

    def sample_active_subnet(self, generator: np.random.Generator | int | None = None) -> Arch:
        """Draw an arch uniformly (single-path one-shot, SPOS) and make it active."""
        return self.set_active_subnet(self.space.sample(generator))

    @property
    def active(self) -> Arch:
        if self._active is None:
            raise ArchError("no active subnet: call set_active_subnet(arch) or sample_active_subnet(rng) first")
        return self._active

    def get_active_subnet(self) -> Network:
        """A stand-alone ``Network`` for the active arch with the supernet's current weights
        and BN statistics copied (recalibrate first if they are to mean anything).

        Returned in eval mode, ready for export; call ``.train()`` to fine-tune it."""
        plan = self.plan(self.active)
        with torch.device("meta"):
            net = Network(plan)
        state = {k: v.detach().clone().contiguous() for k, v in self._path_tensors(plan).items()}
        net.load_state_dict(state, strict=True, assign=True)
        return net.eval()

    def plan(self, arch: Arch | str) -> NetPlan:
        """The (cached) layer plan of ``arch`` at this supernet's resolution and classes."""
        arch = self.space.parse(arch)
        plan = self._plans.get(arch)
        if plan is None:
            res = None if self.space.searchable_resolution else self.resolution
            plan = plan_arch(self.space, arch, res, self.num_classes)
            self._plans[arch] = plan
            if len(self._plans) > _PLAN_CACHE:
                self._plans.popitem(last=False)
        return plan

    # -- forward ----------------------------------------------------------------
    def forward(self, x: torch.Tensor, arch: Arch | str | None = None) -> torch.Tensor:
        plan = self.plan(self.active if arch is None else arch)
        if self.space.searchable_resolution:
            x = to_resolution(x, plan.resolution)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bn_state = self._bn_state()
        _set_bn(_bns(self.stem), *bn_state)
        x = self.stem(x)
        for slot, p in zip(self.slots, plan.layers):
            if p.op.skip and not p.projection:
                continue
            module, bns = _template(p)
            _set_bn(bns, *bn_state)
            x = functional_call(module, slot.tensors(p), (x,), strict=True)
        last = plan.layers[-1].out_channels if plan.layers else plan.stem_channels
        if self.space.head_channels:
            module, bns = _head_template(last, self.space.head_channels)
            _set_bn(bns, *bn_state)
            x = functional_call(module, self._head_tensors(last, ""), (x,), strict=True)
            last = self.space.head_channels
        x = x.mean((2, 3))
        return F.linear(x, self.classifier.weight[:, :last], self.classifier.bias)

    def forward_relaxed(self, x: torch.Tensor, gates) -> torch.Tensor:
        """FBNetV2-style masked forward of all choices at once, weighted by ``gates`` (one
        mapping dimension -> gate vector per decision); equals ``forward(x, arch)`` exactly
        for one-hot gates.  See ``hwnas.nn.relaxed.relaxed_forward``."""
        from hwnas.nn.relaxed import relaxed_forward  # relaxed builds on this module: import it late

        return relaxed_forward(self, x, gates)

    def _head_tensors(self, last: int, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}0.weight": self.head_w[:, :last], **bn_tensors(self.head_bn, self.space.head_channels, f"{prefix}1")}

    def _path_tensors(self, plan: NetPlan) -> dict[str, torch.Tensor]:
        """Every tensor of ``Network(plan)``'s state dict, sliced from the supernet."""
        state = {f"stem.{k}": v for k, v in self.stem.state_dict(keep_vars=True).items()}
        for i, (slot, p) in enumerate(zip(self.slots, plan.layers)):
            state.update({f"layers.{i}.{k}": v for k, v in slot.tensors(p).items()})
        last = plan.layers[-1].out_channels if plan.layers else plan.stem_channels
        if self.space.head_channels:
            state.update(self._head_tensors(last, "head."))
            last = self.space.head_channels
        state["classifier.weight"] = self.classifier.weight[:, :last]
        state["classifier.bias"] = self.classifier.bias
        return state

    # -- BatchNorm modes (see the module docstring) ----------------------------
    def _bn_state(self) -> tuple[bool, bool, float | None, bool]:
        """(BN training flag, track running stats, momentum, sync over ranks) for the current mode."""
        if self._bn_mode == "batch":
            return True, False, self.bn_momentum, False
        if self._bn_mode == "calib":
            return True, True, self._calib_momentum, False
        return self.training, True, self.bn_momentum, self._sync_bn and self.training

    @contextlib.contextmanager
    def synced_bn(self):
        """Within this block a training forward normalises with the batch statistics of the
        images of all ranks (``hwnas.nn.sync_bn``); every rank must run the same path."""
        old, self._sync_bn = self._sync_bn, True
        try:
            yield self
        finally:
            self._sync_bn = old

    @contextlib.contextmanager
    def batch_stats(self):
        """Within this block BN normalises with the current batch's statistics and leaves
        running statistics untouched (per-path exact evaluation without recalibration)."""
        old, self._bn_mode = self._bn_mode, "batch"
        try:
            yield self
        finally:
            self._bn_mode = old

    @contextlib.contextmanager
    def calibrating(self):
        """Within this block a forward overwrites the path's running statistics with a
        cumulative average; call ``set_calibration_step(t)`` before batch ``t``."""
        old, self._bn_mode = self._bn_mode, "calib"
        try:
            yield self
        finally:
            self._bn_mode = old

    def set_calibration_step(self, t: int) -> None:
        # momentum 1/(t+1): batch 0 replaces the old value, batch t folds in a running mean,
        # the same cumulative average as PyTorch's momentum=None
        self._calib_momentum = 1.0 / (t + 1)

    def extra_repr(self) -> str:
        extra = f", private_bn={self.private_bn}" if self.private_bn else ""
        return f"space={self.space.name!r}, num_classes={self.num_classes}, resolution={self.resolution}{extra}"


def _check_private_bn(private_bn) -> tuple[str, ...]:
    names = (private_bn,) if isinstance(private_bn, str) else tuple(private_bn)
    bad = [n for n in names if n not in BN_POSITIONS]
    if bad:
        raise TrainError(f"private_bn: unknown BN position {bad[0]!r}; valid: {valid_list(BN_POSITIONS)}")
    return tuple(n for n in BN_POSITIONS if n in names)


_PRIVATE_ATTRS = {"expand_bns": "expand", "dw_bns": "spatial", "sa_bns": "spatial", "project_bns": "project"}


def private_bn_from_state(state: dict) -> tuple[str, ...]:
    """The ``private_bn`` positions of the supernet that saved ``state`` (a ``state_dict()``),
    so ``Supernet(space, ..., private_bn=private_bn_from_state(state))`` accepts it."""
    found = set()
    for key in state:
        parts = str(key).split(".")
        if len(parts) > 2 and parts[0] == "slots" and parts[2] in _PRIVATE_ATTRS:
            found.add(_PRIVATE_ATTRS[parts[2]])
    return tuple(n for n in BN_POSITIONS if n in found)


def _bns(module: nn.Module) -> tuple[nn.BatchNorm2d, ...]:
    return tuple(m for m in module.modules() if isinstance(m, nn.BatchNorm2d))


def _set_bn(bns, training: bool, track: bool, momentum: float | None, sync: bool) -> None:
    for bn in bns:
        bn.training = training
        bn.track_running_stats = track
        bn.momentum = momentum
        bn.sync = sync


@lru_cache(maxsize=8192)
def _template(p: LayerPlan) -> tuple[nn.Module, tuple[nn.BatchNorm2d, ...]]:
    """The ``hwnas.nn.blocks`` module of one layer shape, on the meta device (no memory)."""
    with torch.device("meta"):
        module = build_layer(p)
    make_syncable(_bns(module))
    return module, _bns(module)


@lru_cache(maxsize=256)
def _head_template(cin: int, cout: int) -> tuple[nn.Module, tuple[nn.BatchNorm2d, ...]]:
    with torch.device("meta"):
        module = ConvBNAct(cin, cout, 1)
    make_syncable(_bns(module))
    return module, _bns(module)
