"""BatchNorm whose training statistics span every rank of a data-parallel run (CPU and GPU).

Why not ``torch.nn.SyncBatchNorm``: it runs on GPUs only, and our supernet runs each BN as a
template module over sliced tensors (``functional_call``), not as one module per layer.  So the
supernet's BN modules are this subclass, which behaves exactly as ``BatchNorm2d`` unless its
``sync`` flag is set (``Supernet.synced_bn()``, set by the data-parallel training step when every
rank trains the same path).  Then the batch mean and variance are those of the images of all
ranks together: two differentiable all-reduces per BN per forward, of (sum x, count) and then of sum (x - mean)^2
(``_AllReduceSum``: its backward all-reduces the gradients), which
makes N ranks with B images each compute what one process computes with N*B (the DDP
equivalence test).  When ranks train different paths their BN layers differ, so nothing can be
synchronised: each path then normalises over its own rank's B images, as one process does with
a batch of B.
"""
from __future__ import annotations

import torch
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum over ranks is the sum over ranks of
    the gradients (each rank's loss depends on every rank's statistics)."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncableBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d``; with ``sync = True`` in training, statistics over all ranks."""

    sync = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.sync and self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        # two passes, as BN's own kernels centre before squaring: E[x^2] - E[x]^2 cancels badly
        # in float32 and leaves noise in gradients that should be exactly zero
        local = torch.cat([x.sum((0, 2, 3)), x.new_full((1,), x.numel() // c)])
        total = _AllReduceSum.apply(local)
        n = total[c]
        mean = total[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum((0, 2, 3))) / n  # biased, as BN normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        shape = (1, c, 1, 1)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:  # one fused op: written as y * w + b, the blocks' in-place ReLU after it gave
            # input gradients 1-6% off one process's in the equivalence check; addcmul matches to 5e-5
            y = torch.addcmul(self.bias.view(shape), y, self.weight.view(shape))
        return y


def make_syncable(bns) -> None:
    """Turn ``BatchNorm2d`` instances into ``SyncableBatchNorm2d`` in place (same parameters,
    buffers and state-dict keys; ``sync`` off, so nothing changes until it is switched on)."""
    for bn in bns:
        if type(bn) is nn.BatchNorm2d:
            bn.__class__ = SyncableBatchNorm2d
