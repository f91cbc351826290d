"""One training epoch of the search: per batch, the sampler's paths train the supernet, and in
the coupled search the strategy's archs are scored and told (``strategy_step``).

Why its own module: it is where the pieces meet (data order, sampler, training step, strategy
step, progress events), and it should read as the protocol it implements: PARSEC (Casale et
al. 2019, Alg. 1) and FP-NAS (Yan et al. 2021, Sec. 3) per batch in the coupled search, SPOS
(Guo et al. 2020) and GreedyNAS (You et al. 2020) training in the two-stage one.
"""
from __future__ import annotations

import contextlib

from hwnas.search.relaxed_step import relaxed_strategy_step
from hwnas.search.strategy_step import strategy_step
from hwnas.search.train_step import rank_paths, same_paths_on_all_ranks, supernet_step


def search_epoch(loop, warm_sampler, epoch: int, step: int) -> int:
    """One epoch: a supernet step per training batch, plus (coupled search, after warm-up) a
    strategy step on one validation batch; returns the search-step counter.

    Warm-up epochs train ``warm_sampler``'s uniform paths; later epochs ``loop.train_sampler``'s.
    A sampler that scores candidates itself (GreedyNAS) scores them on the same validation
    batch a strategy step of this batch would use.

    The batch of a step is ``batch_size`` images over all ranks: ``DistributedSampler`` gives
    rank r every world-size-th image of the epoch's permutation, so the ranks' shards of step b
    together are exactly the single-process batch b (with one rank, the same permutation as
    before the data-parallel search existed).

    In a class-curriculum stage (``curriculum.py``) the batches keep only the active classes'
    images and every forward of the epoch masks the other classes' logits."""
    view = loop.curriculum.epoch_view(loop, epoch) if getattr(loop, "curriculum", None) is not None else None
    with view.masking(loop.net) if view is not None else contextlib.nullcontext():
        return _epoch_batches(loop, warm_sampler, epoch, step, view)


def _epoch_batches(loop, warm_sampler, epoch: int, step: int, view) -> int:
    """The batches of ``search_epoch`` (``view``: the curriculum's epoch, None without one)."""
    import torch
    from torch.utils.data import DistributedSampler

    config, world = loop.config, loop.world
    xtr, ytr = loop.data.train.tensors
    xva, yva = loop.data.val.tensors
    n_val, vb = len(yva), loop.vb
    loop.net.train()
    data_sampler = DistributedSampler(loop.data.train, num_replicas=world.size, rank=world.rank, shuffle=True,
                                      seed=config.seed * 1000)
    data_sampler.set_epoch(epoch)
    mine = torch.as_tensor(list(data_sampler))
    per_rank = config.batch_size // world.size
    warm = epoch < config.warmup_epochs
    sampler = warm_sampler if warm else loop.train_sampler
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + 500))
    for b in range(loop.steps_per_epoch):
        idx = mine[b * per_rank:(b + 1) * per_rank]
        start = (b * vb) % max(n_val - vb + 1, 1)
        vidx = vperm[start:start + vb]
        if view is not None:  # only the active classes' images; idx None: the supernet step is skipped
            idx, vidx = view.train_batch(idx, b), view.val_batch(b)

        def score(archs, vidx=vidx):
            return loop.reward_of(*loop.evaluate(archs, xva[vidx], yva[vidx], vb), archs)

        draw = sampler.draw(epoch, b, score)
        shared = sampler.same_paths_on_all_ranks
        paths = draw.paths if shared else rank_paths(loop, draw.paths, draw.archs, epoch, b)
        sync_bn = world.active and (shared or same_paths_on_all_ranks(config, draw.archs))
        train_loss = None if idx is None else supernet_step(loop, paths, xtr[idx], ytr[idx], warm, sync_bn=sync_bn)
        if not warm and sampler.finished:  # its early stop (GreedyNAS): this was the last training batch
            loop.emit({"stage": "train", "epoch": epoch, "batch": b, "steps_per_epoch": loop.steps_per_epoch,
                       "train_loss": float("nan") if train_loss is None else train_loss, "stopped": True})
            return step
        if draw.relaxed_step:  # a differentiable strategy (DMaskingNAS): its gates step on the validation batch
            step += 1
            rec = relaxed_strategy_step(loop, vidx, step, epoch, train_loss)
            loop.emit({"stage": "search", "epoch": epoch, "batch": b, "steps_per_epoch": loop.steps_per_epoch, **rec})
            continue
        if draw.archs is None:
            loop.emit({"stage": "warmup" if warm else "train", "epoch": epoch, "batch": b,
                       "steps_per_epoch": loop.steps_per_epoch,
                       "train_loss": float("nan") if train_loss is None else train_loss})
            continue
        step += 1
        rec = strategy_step(loop, draw.archs, vidx, step, epoch, train_loss)
        loop.emit({"stage": "search", "epoch": epoch, "batch": b, "steps_per_epoch": loop.steps_per_epoch, **rec})
    return step
