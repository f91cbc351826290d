"""Stand-alone training of one network: the loop ``hwnas export`` uses after a search.

Why a separate loop from the supernet's: once the search has picked an architecture, the
usual NAS protocol (FBNet, Wu et al. 2019, Sec. 4.1; FP-NAS, Yan et al. 2021, Sec. 4)
trains it alone from scratch, or fine-tunes the weights it inherited from the supernet
(Once-for-All, Cai et al. 2020, Sec. 3.3).  The loop is deliberately plain: SGD with
Nesterov momentum or AdamW, a per-step cosine schedule (Loshchilov & Hutter 2017,
eq. 5, without restarts), label smoothing optional, seeded shuffling, and a validation
pass after every epoch.

No prints: progress goes to an optional callback (the CLI draws a rich bar with it).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

from hwnas.errors import TrainError, valid_list

log = logging.getLogger(__name__)


OPTIMIZERS = ("sgd", "adamw")
# default peak learning rates (batch 64): SGD as in MobileNet-style recipes scaled down,
# AdamW's usual 1e-3 scale.
DEFAULT_LR = {"sgd": 0.05, "adamw": 2e-3}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one stand-alone training run."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer must be one of {valid_list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.epochs < 0:
            raise TrainError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise TrainError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"lr must be a positive number, got {self.lr}")

    @property
    def peak_lr(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did: mean training loss/accuracy and the validation result."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # learning rate at the end of the epoch
    seconds: float


@dataclass(frozen=True)
class TrainProgress:
    """One progress event: ``stage`` is 'step' (after a batch) or 'epoch' (after validation)."""

    stage: str
    epoch: int  # 1-based
    epochs: int
    step: int  # steps done so far over the whole run
    total_steps: int
    loss: float
    stats: EpochStats | None = None


ProgressFn = Callable[[TrainProgress], None]


def train_network(model, train_set, val_set, config: TrainConfig, *,
                  progress: ProgressFn | None = None) -> list[EpochStats]:
    """Train ``model`` in place on ``train_set`` and validate on ``val_set`` every epoch.

    ``train_set``/``val_set`` are ``TensorDataset``s (images, labels).  Deterministic for a
    given seed on one machine: the shuffle uses its own ``torch.Generator`` and the
    weights' randomness is whatever the caller seeded when building the model.
    """
    import time

    import torch

    from hwnas.data import make_loader

    if config.epochs == 0:
        return []
    if len(train_set) == 0:
        raise TrainError("the training split is empty; use a larger dataset or limit")
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * config.epochs
    opt = _optimizer(model, config)
    peak = config.peak_lr
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history: list[EpochStats] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            lr = cosine_lr(peak, step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(x)
            loss = loss_fn(out, y)
            if not torch.isfinite(loss):
                raise TrainError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower the learning "
                                 f"rate (now {peak})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            n = len(y)
            loss_sum += loss.item() * n
            correct += int((out.argmax(1) == y).sum())
            seen += n
            if progress is not None:
                progress(TrainProgress("step", epoch, config.epochs, step, total, loss.item()))
        val_loss, val_acc = evaluate_network(model, val_set, batch_size=max(config.batch_size, 256))
        stats = EpochStats(epoch, loss_sum / seen, correct / seen, val_loss, val_acc,
                           cosine_lr(peak, step, total), time.perf_counter() - t0)
        history.append(stats)
        log.info("epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc %.4f", epoch, config.epochs,
                 stats.train_loss, stats.train_acc, val_loss, val_acc)
        if progress is not None:
            progress(TrainProgress("epoch", epoch, config.epochs, step, total, stats.train_loss, stats))
    model.eval()
    return history


def cosine_lr(peak: float, step: int, total: int) -> float:
    """Cosine annealing from ``peak`` to 0 over ``total`` steps (SGDR eq. 5, one cycle)."""
    if total <= 0:
        return peak
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(step, total) / total))


def _optimizer(model, config: TrainConfig):
    import torch

    # no weight decay on BN parameters and biases (the usual recipe, e.g. Goyal et al. 2017)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.peak_lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.peak_lr)


def evaluate_network(model, dataset, *, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` (eval mode) on a ``TensorDataset``."""
    import torch

    logits = predict_logits(model, dataset.tensors[0], batch_size=batch_size)
    y = dataset.tensors[1]
    if len(y) == 0:
        return float("nan"), float("nan")
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    return loss, float((logits.argmax(1) == y).float().mean())


def predict_logits(model, images, *, batch_size: int = 256):
    """Logits of ``model`` in eval mode for a float32 NCHW tensor, in batches."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            outs.append(model(images[i:i + batch_size]))
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def recalibrate_bn(model, train_set, *, batches: int = 20, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate BN running statistics of ``model`` on training images.

    Why: weights inherited from a weight-sharing supernet come with BN statistics that were
    accumulated over many different paths, which do not match the one path kept; OFA
    (Cai et al. 2020, Sec. 3.3) and slimmable networks (Yu & Huang 2019, "Universally
    slimmable networks", Sec. 3.3) recompute them on a few training batches before
    evaluating.  ``momentum=None`` makes BN keep an exact cumulative average.

    Not ``hwnas.nn.supernet_train.recalibrate_bn``: that one rewrites one path's slices
    inside the supernet; this one works on any stand-alone module, such as the network
    ``Supernet.get_active_subnet()`` returns.
    """
    import torch

    from hwnas.data import make_loader

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or len(train_set) == 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    loader = make_loader(train_set, batch_size, shuffle=True, seed=seed)
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
