"""One supernet training step, single process or data-parallel (torchrun).

Why its own module: this is the only code that updates the supernet's weights, and the only
search code that knows about DDP; the training sampler decides *which* paths and *what* loss,
this module applies them.  The batch of a step is ``batch_size`` images over all ranks.
"""
from __future__ import annotations

import contextlib

import numpy as np


def supernet_step(loop, paths, xb, yb, warm: bool, sync_bn: bool = False) -> float:
    """One SGD step on a training batch over ``paths``; returns the (weighted) training loss
    of this rank's shard.

    ``weight_estimator="mean"``: the plain mean of the paths' losses (they are samples of the
    distribution, so it estimates ``E_alpha[loss]``).  ``"importance"``: PARSEC's weight
    gradient, ``sum_k omega_k grad loss_k`` with ``omega = softmax(-n * loss)``, the paths'
    self-normalised likelihoods of the batch (``n`` its size), held fixed; under torchrun the
    paths' losses are averaged over the ranks first, so omega is the whole batch's.
    A path's loss is the training sampler's (``TrainSampler.loss``; cross-entropy in warm-up
    and without a sampler).

    With ``sync_bn`` (every rank trains the same paths) BN normalises over the images of all
    ranks (``Supernet.synced_bn``), so N ranks of B images compute what one process does with
    N*B; otherwise over this rank's shard.  Gradients are averaged over the ranks by DDP
    (inside ``backward``) for a step of one path, or by one flat all-reduce after the per-path
    backwards (``grad_sync='allreduce'``, and every step of several paths: DDP marks a
    parameter ready once per backward, so paths that share weights cannot each run a forward
    through the wrapper before one backward; both reductions are tested equal)."""
    import torch.nn.functional as F

    from hwnas.distributed import average_gradients

    from hwnas.search.train_samplers import RelaxedPath

    world, net = loop.world, loop.net
    param = next(net.parameters())
    xb, yb = xb.to(param.device, param.dtype), yb.to(param.device)
    # a relaxed path runs ``forward_relaxed``, which DDP's hooks on ``forward`` do not see
    ddp = loop.train_net is not net and len(paths) == 1 and not isinstance(paths[0], RelaxedPath)
    runner = loop.train_net if ddp else net
    sampler = None if warm else loop.train_sampler

    def forward(a):
        if isinstance(a, RelaxedPath):
            return net.forward_relaxed(xb, a.gates)
        net.set_active_subnet(a)
        return runner(xb)

    def path_loss(a):
        return F.cross_entropy(forward(a), yb) if sampler is None else sampler.loss(forward, yb, a, xb=xb)

    loop.optimizer.zero_grad()
    with net.synced_bn() if sync_bn else contextlib.nullcontext():
        train_loss = _backward(loop, paths, path_loss, len(yb), warm, ddp)
    if not ddp:
        average_gradients(net.parameters(), world)
    loop.optimizer.step()
    if sampler is not None:
        sampler.after_step(net, paths)
    return train_loss


def _backward(loop, paths, path_loss, n: int, warm: bool, ddp: bool) -> float:
    """The backward pass(es) of ``supernet_step``; returns this rank's training loss."""
    import torch

    config, world = loop.config, loop.world
    if warm or config.weight_estimator == "mean" or len(paths) == 1:
        if ddp:  # one path
            loss = path_loss(paths[0])
            loss.backward()
            train_loss = float(loss.detach())
        else:
            train_loss = 0.0
            for a in paths:  # one backward per path keeps one path's activations in memory
                loss = path_loss(a) / len(paths)
                loss.backward()
                train_loss += float(loss.detach())
    else:
        losses = torch.stack([path_loss(a) for a in paths])
        batch_losses = losses.detach().clone()
        if world.active:
            import torch.distributed as dist

            dist.all_reduce(batch_losses)
            batch_losses /= world.size
        omega = torch.softmax(-n * world.size * batch_losses, 0)
        loss = (omega * losses).sum()
        loss.backward()
        train_loss = float(loss.detach())
    return train_loss


def rank_paths(loop, paths: list, archs: list | None, epoch: int, batch: int) -> list:
    """The paths this rank trains on: rank 0's ``paths`` on rank 0 (and on every rank with
    ``rank_paths='shared'``, or when every sampled arch trains: ``train_paths=0``); otherwise
    rank r draws as many of its own from the same distribution, with a generator seeded by
    (seed, epoch, batch, rank), so the draws need no state and survive a resume with another
    world size.  Uniform training (warm-up, ``train_sampler='uniform'``) draws uniformly;
    a strategy without a distribution (random, evolution) lends rank r the next ones of its
    own proposals."""
    config, world = loop.config, loop.world
    if world.is_main or same_paths_on_all_ranks(config, archs):
        return paths
    rng = np.random.default_rng([config.seed, epoch, batch, world.rank])
    if archs is None:
        return [loop.space.sample(rng) for _ in paths]
    if loop.strategy.is_distribution:
        return loop.strategy.dist.sample(len(paths), rng)
    return [archs[(world.rank * len(paths) + j) % len(archs)] for j in range(len(paths))]


def same_paths_on_all_ranks(config, archs: list | None) -> bool:
    """Whether every rank trains rank 0's paths this step (then BN can use all ranks' images)."""
    return config.rank_paths == "shared" or (archs is not None and config.train_paths == 0)
