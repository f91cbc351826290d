"""One training epoch of the search: per batch, the sampler's paths train the supernet, and in
the coupled search the strategy's archs are scored and told (``strategy_step``).

Why its own module: it is where the pieces meet (data order, sampler, training step, strategy
step, progress events), and it should read as the protocol it implements: PARSEC (Casale et
al. 2019, Alg. 1) and FP-NAS (Yan et al. 2021, Sec. 3) per batch in the coupled search, SPOS
(Guo et al. 2020) and GreedyNAS (You et al. 2020) training in the two-stage one.
"""
from __future__ import annotations

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
    before the data-parallel search existed)."""
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

        def score(archs, vidx=vidx):
            return loop.reward_of(*loop.evaluate(archs, xva[vidx], yva[vidx], vb), archs)

        draw = sampler.draw(epoch, b, score)
        shared = sampler.same_paths_on_all_ranks
        paths = draw.paths if shared else rank_paths(loop, draw.paths, draw.archs, epoch, b)
        sync_bn = world.active and (shared or same_paths_on_all_ranks(config, draw.archs))
        train_loss = supernet_step(loop, paths, xtr[idx], ytr[idx], warm, sync_bn=sync_bn)
        if draw.archs is None:
            loop.emit({"stage": "warmup" if warm else "train", "epoch": epoch, "batch": b,
                       "steps_per_epoch": loop.steps_per_epoch, "train_loss": train_loss})
            continue
        step += 1
        rec = strategy_step(loop, draw.archs, vidx, step, epoch, train_loss)
        loop.emit({"stage": "search", "epoch": epoch, "batch": b, "steps_per_epoch": loop.steps_per_epoch, **rec})
    return step
