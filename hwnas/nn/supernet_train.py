"""Training and scoring single paths of a ``Supernet`` (duck-typed, so no import cycle).

Training is single-path one-shot (SPOS, Guo et al. ECCV 2020; the supernet step of PARSEC
and FP-NAS): every batch samples one arch from ``sample_fn`` (uniform, or the search
distribution), runs only that path and steps the shared weights.  With SGD weight decay
the slices a path does not use still decay (their gradient is zero, not absent), as in
OFA; use an optimizer without decay if that matters.

Scoring a path (``evaluate_arch``) uses BN batch statistics by default, or recalibrated
running statistics: see ``hwnas.nn.supernet`` for why BN needs either.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from hwnas.errors import DataError

log = logging.getLogger(__name__)

BN_MODES = ("batch", "running", "recalibrate")


def train_supernet_epoch(net, loader: Iterable, optimizer: torch.optim.Optimizer, sample_fn: Callable[[], object],
                         device: str | torch.device = "cpu", *, max_batches: int | None = None,
                         grad_clip: float | None = None) -> dict:
    """One pass over ``loader``; each batch trains the path ``sample_fn()`` returns.

    Returns ``{"loss", "acc", "batches", "images"}`` averaged over the images seen (each
    measured on the path that trained on it, before its step).
    """
    net.train()
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for x, y in loader:
        if max_batches is not None and steps >= max_batches:
            break
        net.set_active_subnet(sample_fn())
        x, y = x.to(device, _dtype(net)), y.to(device)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        n = len(y)
        total_loss += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += n
        steps += 1
    if seen == 0:
        raise DataError("the training loader yielded no batches")
    return {"loss": total_loss / seen, "acc": correct / seen, "batches": steps, "images": seen}


@torch.no_grad()
def evaluate_arch(net, arch, data, max_batches: int | None = None, *, bn: str = "batch", calib=None,
                  calib_batches: int = 20, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of path ``arch`` on ``data`` (a DataLoader, a
    TensorDataset or an ``(x, y)`` pair of tensors; at most ``max_batches`` batches).

    ``bn``: ``"batch"`` (default) normalises with each evaluation batch's statistics: exact
    for the path, changes nothing, costs nothing; ``"recalibrate"`` first rewrites the
    path's running statistics on ``calib_batches`` batches of ``calib`` (training data,
    OFA), then evaluates with them; ``"running"`` uses whatever running statistics the
    supernet holds (after your own ``recalibrate_bn``).
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {', '.join(BN_MODES)}; got {bn!r}")
    arch = net.space.parse(arch)
    if bn == "recalibrate":
        if calib is None:
            raise ValueError("bn='recalibrate' needs calib=<training loader or tensors>")
        recalibrate_bn(net, arch, calib, calib_batches, batch_size=batch_size)
    device = _device(net)
    was_training = net.training
    net.eval()
    total_loss, correct, seen = 0.0, 0, 0
    try:
        ctx = net.batch_stats() if bn == "batch" else contextlib.nullcontext()
        with ctx:
            for i, (x, y) in enumerate(iter_batches(data, batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                if bn == "batch" and len(y) < 2 and seen:  # a trailing 1-image batch has no batch statistics
                    continue
                x, y = x.to(device, _dtype(net)), y.to(device)
                logits = net(x, arch)
                total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
    finally:
        net.train(was_training)
    if seen == 0:
        raise DataError("the evaluation data yielded no batches")
    return total_loss / seen, correct / seen


@torch.no_grad()
def recalibrate_bn(net, arch, loader, batches: int = 20, *, batch_size: int = 256) -> int:
    """Rewrite the running BN statistics of path ``arch`` as their average over ``batches``
    batches of ``loader`` (OFA's BN recalibration).  Only that path's BN slices change.
    Returns the number of batches used."""
    arch = net.space.parse(arch)
    device = _device(net)
    used = 0
    with net.calibrating():
        for t, (x, _) in enumerate(iter_batches(loader, batch_size)):
            if t >= batches:
                break
            net.set_calibration_step(t)
            net(x.to(device, _dtype(net)), arch)
            used += 1
    if used == 0:
        raise DataError("BN recalibration got no batches from its loader")
    return used


def iter_batches(data, batch_size: int = 256):
    """Batches ``(x, y)`` from a DataLoader (as is), a TensorDataset or an ``(x, y)`` pair."""
    if isinstance(data, TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        x, y = data
        return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))
    if isinstance(data, (DataLoader, Iterable)):
        return data
    raise TypeError(f"data must be a DataLoader, a TensorDataset or an (x, y) pair of tensors, got {type(data).__name__}")


def _device(net) -> torch.device:
    return next(net.parameters()).device


def _dtype(net) -> torch.dtype:
    """The supernet's float type (float64 in the data-parallel equivalence test): images follow it."""
    return next(net.parameters()).dtype
