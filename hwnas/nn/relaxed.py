"""Relaxed supernet forward for DMaskingNAS (FBNetV2, Wan et al., CVPR 2020, arXiv 2004.05565).

FBNetV2 searches channel counts with one conv of the widest width whose output is
multiplied by a Gumbel-weighted sum of channel masks, ``y = conv(x) * sum_k g_k 1[c < c_k]``,
so that memory and compute "stay nearly constant as the search space expands" (abstract
[paper]).  The equations below are our reading, [paper?] Sec. 3; the search code was never
released (``facebookresearch/mobile-vision`` issue #29).  hwnas's supernet already shares
leading channels, so the masks apply to its widest tensors directly.

Gates: one mapping per decision of the space, ``{dimension: 1-D tensor over
decision.dim_values()[dimension]}`` (``gate_dims(space)`` lists them; ``gates_from_flat``
converts the parameter list of ``CategoricalDistribution(space, factorized=True)``, which
uses the same order).  A dimension with a single value carries no choice; its gate may be
omitted and is not used.  Gates are used as given (Gumbel-softmax samples from
``gumbel_gates``, softmax probabilities, one-hot, straight-through), not renormalised.

Per layer, with ``q`` the distribution of the input's channel count (propagated from layer to
layer, FBNetV2's "effective shape propagation" [paper?] kept as a distribution):

- expansion: hidden mask ``m_h = sum_{c, e} q(c) g_e 1[j < round(c e)]`` after the expand
  and after the depthwise BN + ReLU (after BN: batch-statistic BN would undo a mask in front
  of it; the brief 3.7's "natural reading", Fig. 3 [paper?]);
- kernel: one depthwise conv with the effective kernel ``sum_k g_k pad(centre_k(W))``
  (Single-Path NAS, Stamoulis et al. 2019, applied to hwnas's shared centres; not FBNetV2's);
- block type and split-attention radix: mixed ops, ``g_mb dw(z) + g_sa sum_r g_r SA_r(z)``,
  each SA radix with the effective kernel, its own BN (as the single path) and its
  attention bottleneck masked like ``m_h`` (a cost that grows with the number of radices);
- SE: a mixed op ``g_yes SE(z) + g_no z``, the SE bottleneck masked like ``m_h``;
- width: output mask ``m_w = sum_w g_w 1[j < c_w]`` after the project BN;
- residual: the input added with weight ``sum_{c = c_w} q(c) g_w`` (the probability that
  input and output widths match, which is when a single path adds its input), cut to the
  widest matching width;
- skip: a mixed op ``g_skip x' + g_block block(x)``, ``x'`` the identity or the 1x1
  projection a single path would use (weighted by ``q`` when that depends on the input width).

Resolution (searchable-resolution spaces): **not FBNetV2's masking**.  The paper realises
candidate resolutions as subsampled, zero-interleaved maps of the full size so one forward
serves all [paper?]; that cannot equal hwnas's single path, which resizes the input
bilinearly to resolutions with non-integer ratios (224/192/160/128).  Instead each live
resolution runs its own relaxed forward on the resized input and the logits are mixed,
``sum_r g_r f(resize(x, r))`` (the brief 3.7's labelled approximation): exact for one-hot
gates, differentiable in ``g_r``, but K resolutions cost K forwards, not one.

The input of a layer mixes paths of different widths, ``x = sum_c q(c) x_c``, and the
residual and the skip can only weight that mixture as a whole (a scalar probability): the
relaxation is exact at one-hot gates and a surrogate elsewhere, as every DNAS mixture is.

Exactness: a choice whose gate is exactly zero and does not require grad is not computed
(its channels would be multiplied by zero), so one-hot constant gates run exactly the
single path's tensors: ``relaxed_forward(net, x, one_hot_gates(space, arch))`` equals
``net(x, arch)`` bit for bit (``torch.equal``).  Gates that require grad keep every choice
live (a zero gate's gradient needs the channels it would add): one widest forward, equal
to the single path up to float rounding for one-hot values.  BN modes (train, eval,
``batch_stats()``, ``calibrating()``, ``synced_bn()``) apply as in ``Supernet.forward``;
in training, a relaxed forward updates the running statistics of the widest live slices.

Not built: constant-cost resolution masking (above), grouped convs (refused: a prefix mask
does not respect the groups), private BN (refused: one BN per op would make the forward a
mixed op over every op), joint (non-factorized) spaces such as ``fbnet`` (refused: no
per-dimension gates), FBNetV2's effective-shape cost (a strategy can compute it from the
gates; ``hwnas.search.penalty`` has the exact expected cost).  Reading a gate's values to
find live choices synchronises with the device once per gate tensor when gates do not
require grad.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.func import functional_call

from hwnas.errors import ArchError, TrainError, valid_list
from hwnas.nn._supernet_layers import bn_tensors, centre
from hwnas.nn.blocks import ConvBNAct
from hwnas.nn.model import to_resolution
from hwnas.nn.supernet import _bns, _set_bn
from hwnas.nn.sync_bn import make_syncable
from hwnas.space import RESOLUTION, Arch, SearchSpace
from hwnas.space._plan import make_divisible, sa_channels, se_channels

__all__ = ["check_relaxable", "choice_weights", "gate_dims", "gates_from_flat", "gumbel_gates", "one_hot_gates",
           "relaxed_forward"]

Gates = list[dict[str, torch.Tensor]]


# -- gates ------------------------------------------------------------------------
def gate_dims(space: SearchSpace) -> list[dict[str, tuple]]:
    """Per decision, its dimensions and their ordered values: the shape of ``gates``."""
    return [d.dim_values() for d in space.decisions]


def gates_from_flat(space: SearchSpace, tensors) -> Gates:
    """Nest a flat list of per-dimension tensors, ordered decision by decision and within a
    decision as ``decision.dim_values()`` (the order of
    ``CategoricalDistribution(space, factorized=True).params``)."""
    tensors = list(tensors)
    dims = gate_dims(space)
    n = sum(len(d) for d in dims)
    if len(tensors) != n:
        raise ArchError(f"gates_from_flat: space {space.name!r} has {n} decision dimensions, "
                        f"got {len(tensors)} tensors")
    out, it = [], iter(tensors)
    for d in dims:
        out.append({name: next(it) for name in d})
    return out


def one_hot_gates(space: SearchSpace, arch: Arch | str, *, dtype: torch.dtype = torch.float32,
                  requires_grad: bool = False) -> Gates:
    """The gates that select exactly ``arch``: 1 on its value of each dimension it has, 0
    elsewhere (a skip choice has only ``skip``; its other dimensions get all zeros)."""
    arch = space.parse(arch)
    out = []
    for d, token in zip(space.decisions, arch.tokens):
        own = dict(d.dims[d.index(token)])
        gates = {}
        for name, values in d.dim_values().items():
            g = torch.zeros(len(values), dtype=dtype)
            if name in own:
                g[values.index(own[name])] = 1.0
            gates[name] = g.requires_grad_(requires_grad)
        out.append(gates)
    return out


def gumbel_gates(logits: Gates, tau: float, *, generator: torch.Generator | None = None, hard: bool = False) -> Gates:
    """Gumbel-softmax samples (Jang et al. 2017; FBNet/FBNetV2's relaxation) of the same
    structure as ``logits``: ``softmax((logit + G) / tau)``, ``G`` Gumbel(0, 1) noise drawn from
    ``generator`` (reproducible, unlike ``F.gumbel_softmax``).  ``hard``: one-hot forward,
    soft gradient (straight-through)."""
    if not tau > 0:
        raise TrainError(f"gumbel_gates: tau must be > 0, got {tau!r}")
    out = []
    for d in logits:
        gates = {}
        for name, lg in d.items():
            u = torch.rand(lg.shape, generator=generator, dtype=lg.dtype).to(lg.device)
            noise = -torch.log(-torch.log(u.clamp(min=torch.finfo(lg.dtype).tiny)))
            y = torch.softmax((lg + noise) / tau, dim=-1)
            if hard:
                y_hard = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)
                y = y_hard - y.detach() + y
            gates[name] = y
        out.append(gates)
    return out


def _check_gates(space: SearchSpace, gates, dtype, device) -> Gates:
    gates = list(gates)
    if len(gates) != len(space.decisions):
        raise ArchError(f"gates: space {space.name!r} has {len(space.decisions)} decisions, "
                        f"got {len(gates)} gate mappings")
    out = []
    for d, g in zip(space.decisions, gates):
        values = d.dim_values()
        unknown = [k for k in g if k not in values]
        if unknown:
            raise ArchError(f"gates[{d.name}]: unknown dimension {unknown[0]!r}; valid: {valid_list(values)}")
        checked = {}
        for name, vals in values.items():
            t = g.get(name)
            if t is None:
                if len(vals) > 1:
                    raise ArchError(f"gates[{d.name}]: missing dimension {name!r} (values {valid_list(vals)})")
                continue
            if not torch.is_tensor(t) or tuple(t.shape) != (len(vals),):
                shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise ArchError(f"gates[{d.name}][{name!r}] must be a tensor of shape ({len(vals)},) over "
                                f"{valid_list(vals)}; got {shape}")
            if len(vals) > 1:
                checked[name] = t.to(dtype=dtype, device=device)
        out.append(checked)
    return out


def choice_weights(space: SearchSpace, gates) -> list[torch.Tensor]:
    """Per decision, the weight the gates give each choice: the product of the gates of the
    choice's own dimensions (a skip choice: its ``skip`` gate alone), in choice order.  For
    softmax gates this is the factorized distribution's probability of the choice; for one-hot
    gates it is one-hot on the arch.  (A synthetic objective, or a cost, of the gates.)"""
    out = []
    for d, g in zip(space.decisions, gates):
        values = d.dim_values()
        ws = []
        for pairs in d.dims:
            w = None
            for name, v in pairs:
                if len(values[name]) > 1:
                    t = g[name][values[name].index(v)]
                    w = t if w is None else w * t
            ws.append(torch.ones((), dtype=torch.float64) if w is None else w)
        out.append(torch.stack([w.to(torch.float64) for w in ws]))
    return out


def check_relaxable(space: SearchSpace) -> None:
    """Refuse a space the relaxed forward cannot run (``ArchError``, one line): a joint space
    (no per-dimension gates) or one with grouped ops (module docstring, "Not built")."""
    if not space.factorized:
        raise ArchError(f"forward_relaxed needs a factorized space (one gate per named dimension); space "
                        f"{space.name!r} lists its ops jointly")
    for layer in space.layers:
        for op in layer.ops:
            if op.groups != 1:
                raise ArchError(f"forward_relaxed: op {op.name!r} of space {space.name!r} is grouped; "
                                "only ops with groups 1 are built")


def _check_supported(net) -> None:
    if net.private_bn:
        raise TrainError(f"forward_relaxed needs the shared-BN supernet; this one has private_bn={net.private_bn!r}")
    check_relaxable(net.space)


# -- the forward ------------------------------------------------------------------
def relaxed_forward(net, x: torch.Tensor, gates) -> torch.Tensor:
    """Logits of supernet ``net`` with every live choice mixed by ``gates`` (module docstring)."""
    _check_supported(net)
    dtype = net.classifier.weight.dtype
    space = net.space
    gates = _check_gates(space, gates, dtype, x.device)
    if not space.searchable_resolution:
        return _body(net, x, space.decisions, gates)
    branches = []  # one relaxed forward per live resolution, logits mixed (module docstring)
    for r, gr in _live(gates[0], RESOLUTION, _dim_values(space.decisions[0])[RESOLUTION], RESOLUTION):
        branches.append((_body(net, to_resolution(x, r), space.decisions[1:], gates[1:]), gr))
    return _mix(branches)


def _body(net, x: torch.Tensor, decisions, gates) -> torch.Tensor:
    if net.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bn_state = net._bn_state()
    _set_bn(_bns(net.stem), *bn_state)
    x = net.stem(x)
    q: dict[int, torch.Tensor | None] = {net.space.stem.channels: None}  # None: weight exactly 1
    for slot, layer, d, g in zip(net.slots, net.space.layers, decisions, gates):
        x, q = _layer(slot, layer, d, g, x, q, bn_state)
    last = x.shape[1]
    if net.space.head_channels:
        module, bns = _cba(last, net.space.head_channels, 1, 1, 1, True)
        _set_bn(bns, *bn_state)
        x = functional_call(module, net._head_tensors(last, ""), (x,), strict=True)
        last = net.space.head_channels
    x = x.mean((2, 3))
    return F.linear(x, net.classifier.weight[:, :last], net.classifier.bias)


def _live(g: dict, name: str, value_list, where: str) -> list[tuple[object, torch.Tensor | None]]:
    """(value, gate) of the live values of one dimension; a single-valued one is (value, None)."""
    t = g.get(name)
    if t is None:
        return [(v, None) for v in value_list]
    if t.requires_grad:
        return [(v, t[i]) for i, v in enumerate(value_list)]
    live = [(v, t[i]) for i, (v, w) in enumerate(zip(value_list, t.tolist())) if w != 0]
    if not live:
        raise ArchError(f"gates[{where}][{name!r}] are all 0 where that dimension is used; at least one "
                        f"of {valid_list(value_list)} needs a non-zero gate")
    return live


def _wmul(a, b):
    if a is None:
        return b
    return a if b is None else a * b


def _wsum(ws):
    ws = list(ws)
    if len(ws) == 1:
        return ws[0]
    return sum((1.0 if w is None else w) for w in ws)


def _merge(q: dict, key: int, w) -> None:
    q[key] = w if key not in q else _wsum([q[key], w])


def _mask(weights: list[tuple[int, torch.Tensor | None]], n: int, like: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i 1[j < c_i]`` over ``j < n``, shaped to multiply an NCHW tensor."""
    j = torch.arange(n, device=like.device)
    m = None
    for c, w in weights:
        ind = (j < c).to(like.dtype)
        term = ind if w is None else ind * w
        m = term if m is None else m + term
    return m.view(1, n, 1, 1)


def _mix(terms: list[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    """``sum_i w_i t_i``, narrower tensors zero-padded in channels."""
    width = max(t.shape[1] for t, _ in terms)
    out = None
    for t, w in terms:
        if t.shape[1] < width:
            t = F.pad(t, (0, 0, 0, 0, 0, width - t.shape[1]))
        t = t if w is None else t * w
        out = t if out is None else out + t
    return out


def _run(module_bns, tensors: dict, x: torch.Tensor, bn_state) -> torch.Tensor:
    module, bns = module_bns
    _set_bn(bns, *bn_state)
    return functional_call(module, tensors, (x,), strict=True)


def _layer(slot, layer, decision, g: dict, x: torch.Tensor, q: dict, bn_state):
    values = _dim_values(decision)
    skip = dict(_live(g, "skip", values["skip"], decision.name))
    terms, q_out = [], {}
    if "no" in skip:
        y, qb = _block(slot, layer, decision, g, values, x, q, bn_state)
        terms.append((y, skip["no"]))
        for c, w in qb.items():
            _merge(q_out, c, _wmul(skip["no"], w))
    if "yes" in skip:
        y, qs = _skip(slot, layer, x, q, bn_state)
        terms.append((y, skip["yes"]))
        for c, w in qs.items():
            _merge(q_out, c, _wmul(skip["yes"], w))
    return _mix(terms), q_out


@lru_cache(maxsize=1024)
def _dim_values(decision) -> dict[str, tuple]:
    return decision.dim_values()


def _block(slot, layer, decision, g, values, x, q, bn_state):
    """The relaxed MBConv of one slot; returns the output and its channel distribution."""
    cin = x.shape[1]
    exps = _live(g, "expansion", values["expansion"], decision.name)
    hid = [(int(round(c * e)), _wmul(qc, ge)) for c, qc in q.items() for e, ge in exps]
    h = max(n for n, _ in hid)
    m_h = _mask(hid, h, x)
    z = _run(_cba(cin, h, 1, 1, 1, True), {"0.weight": slot.expand_w[:h, :cin], **bn_tensors(slot.expand_bn, h, "1")},
             x, bn_state) * m_h
    kernels = _live(g, "kernel", values["kernel"], decision.name)
    blocks = _live(g, "block", values["block"], decision.name)
    spatial = []
    for block, gb in blocks:
        if block == "mb":
            w = _effective_kernel(slot.dw_w[:h], kernels)
            y = _run(_cba(h, h, w.shape[-1], layer.stride, h, True), {"0.weight": w, **bn_tensors(slot.dw_bn, h, "1")},
                     z, bn_state) * m_h
        else:
            radii = _live(g, "splits", values["splits"], decision.name)
            y = _mix([(_split_attention(slot, layer, z, hid, m_h, kernels, r, bn_state), gr) for r, gr in radii])
        spatial.append((y, gb))
    z = _mix(spatial)
    se = dict(_live(g, "se", values["se"], decision.name))
    if True in se:
        mids = [(se_channels(n), w_) for n, w_ in hid]
        mid = max(n for n, _ in mids)
        s = z.mean((2, 3), keepdim=True)  # as hwnas.nn.blocks.SqueezeExcite, with the bottleneck masked
        s = F.conv2d(s, slot.se_reduce_w[:mid, :h], slot.se_reduce_b[:mid])
        s = F.conv2d(torch.relu(s) * _mask(mids, mid, s), slot.se_expand_w[:h, :mid], slot.se_expand_b[:h])
        z = _mix([(z * torch.sigmoid(s), se[True])] + ([(z, se[False])] if False in se else []))
    outs = [(make_divisible(layer.channels * wv), gw) for wv, gw in _live(g, "width", values["width"], decision.name)]
    cout = max(n for n, _ in outs)
    project = {"0.weight": slot.project_w[:cout, :h], **bn_tensors(slot.project_bn, cout, "1")}
    y = _run(_cba(h, cout, 1, 1, 1, False), project, z, bn_state) * _mask(outs, cout, z)
    if layer.stride == 1:  # a path adds its input when its widths match: with that probability
        res = [(c, _wmul(qc, gw)) for c, qc in q.items() for n, gw in outs if n == c]
        if res:
            cm = max(c for c, _ in res)  # wider input channels come from paths that add nothing
            y = _mix([(x if cm == cin else x[:, :cm], _wsum(w for _, w in res)), (y, None)])
    q_out: dict = {}
    for n, gw in outs:
        _merge(q_out, n, gw)
    return y, q_out


def _effective_kernel(w: torch.Tensor, kernels) -> torch.Tensor:
    """``sum_k g_k`` (centre ``k x k`` of ``w``, zero-padded to the largest live kernel)."""
    k = max(kk for kk, _ in kernels)
    out = None
    for kk, gk in kernels:
        c = centre(w, kk)
        if kk < k:
            c = F.pad(c, [(k - kk) // 2] * 4)
        c = c if gk is None else c * gk
        out = c if out is None else out + c
    return out


def _split_attention(slot, layer, z, hid, m_h, kernels, r: int, bn_state):
    """``hwnas.nn.blocks.SplitAttention`` with radix ``r`` on the widest live hidden width,
    its hidden channels and attention bottleneck masked (its BN is the radix's own)."""
    h = z.shape[1]
    w = _effective_kernel(slot.sa_w[:h, :r], kernels)
    k = w.shape[-1]
    y = _run(_cba(h, h * r, k, layer.stride, h, True),
             {"0.weight": w.reshape(h * r, 1, k, k), **bn_tensors(slot.sa_bn[str(r)], h * r, "1")}, z, bn_state)
    y = y * m_h.repeat_interleave(r, dim=1)  # channel c * r + i is split i of channel c
    b, _, hh, ww = y.shape
    splits = y.view(b, h, r, hh, ww)
    gap = splits.sum(2).mean((2, 3), keepdim=True)
    mids = [(sa_channels(n, r), wt) for n, wt in hid]
    mid = max(n for n, _ in mids)
    a = F.conv2d(gap, slot.fc1_w[:mid, :h], slot.fc1_b[:mid])
    a = torch.relu(a) * _mask(mids, mid, a)
    att = F.conv2d(a, slot.fc2_w[:h, :r, :mid].reshape(h * r, mid, 1, 1), slot.fc2_b[:h, :r].reshape(h * r))
    att = att.view(b, h, r, 1, 1)
    att = torch.softmax(att, dim=2) if r > 1 else torch.sigmoid(att)
    return (splits * att).sum(2)


def _skip(slot, layer, x, q, bn_state):
    """Identity, or the 1x1 projection a single path uses when the shape changes."""
    cin = x.shape[1]
    ident = {c: w for c, w in q.items() if not (layer.first_in_stage and (layer.stride != 1 or c != layer.channels))}
    proj = [w for c, w in q.items() if c not in ident]
    terms, q_out = [], dict(ident)
    if ident:
        cm = max(ident)
        terms.append((x if cm == cin else x[:, :cm], _wsum(ident.values()) if proj else None))
    if proj:
        n = layer.channels
        tensors = {"0.weight": slot.proj_w[:n, :cin], **bn_tensors(slot.proj_bn, n, "1")}
        y = _run(_cba(cin, n, 1, layer.stride, 1, False), tensors, x, bn_state)
        pw = _wsum(proj)
        terms.append((y, pw if ident else None))
        _merge(q_out, n, pw)
    return _mix(terms), q_out


@lru_cache(maxsize=4096)
def _cba(cin: int, cout: int, k: int, stride: int, groups: int, act: bool):
    """A ``ConvBNAct`` template on the meta device (as ``supernet._template``), with its BNs."""
    with torch.device("meta"):
        module = ConvBNAct(cin, cout, k, stride, groups, act)
    make_syncable(_bns(module))
    return module, _bns(module)
