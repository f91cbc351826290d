"""The search driver: warm up a weight-sharing supernet, train it with the run's training
sampler (searching as it trains, or not), optionally search the frozen supernet, report.

Protocol (PARSEC, Casale et al. 2019, Alg. 1; FP-NAS, Yan et al. 2021, Sec. 3; the two-stage
SPOS, Guo et al. 2020, and GreedyNAS, You et al. 2020):

1. **Warm-up** (``warmup_epochs``): train the supernet with paths drawn uniformly
   (single-path one-shot), so that no choice is favoured before the search starts.
2. **Training** (the remaining epochs), one supernet step per training batch on the paths of
   the training sampler (``train_samplers.py``):
   - ``strategy`` (the coupled search): ``archs = strategy.ask()`` (``K`` archs: fixed for
     PARSEC/random, entropy-adaptive for FP-NAS); the first ``train_paths`` of them train
     (they are samples of the current distribution, so the plain mean of their losses is an
     unbiased estimate of ``E_alpha[loss]``; ``weight_estimator="importance"`` weights them as
     PARSEC does; ``train_paths=0`` trains all ``K``, as PARSEC's weight gradient does, and
     the cost per step then grows with ``K``, which is what FP-NAS's adaptive ``K`` saves);
     then the **rewards** of all ``K`` archs on one validation batch with the shared weights
     (``-loss`` or accuracy; BN uses the batch's statistics, see ``hwnas.nn.supernet``),
     shaped by the budget penalty (``penalty.py``), go to ``strategy.tell``;
   - ``uniform`` (SPOS), ``greedy`` (GreedyNAS, ``greedynas.py``; it may end training early
     on a stable pool), ``bn_only`` (BN-NAS, ``bnnas.py``: from the end of warm-up the
     optimizer holds only BN parameters, the rest is frozen), ``attentive`` and ``pinas``: the
     strategy is not asked while the supernet trains;
   - ``relaxed`` (DMaskingNAS, ``dmasking.py``): the weights train on the relaxed forward of
     every choice at once, then the strategy's gates take a gradient step on the validation
     batch (``relaxed_step.py``) in place of ask/tell.
   With a class curriculum (``class_schedule``, ``curriculum.py``; DA-NAS-style) these epochs
   come in stages of growing active class sets, easiest first: the batches keep only the
   active classes' images, and the losses and rewards only their logits.
3. **Search stage** (``search_stage_steps`` > 0): ask/tell rounds on the frozen supernet.
4. **Final arch**: ``penalty.select_final`` (most likely arch meeting the budget), its
   supernet validation accuracy, predicted latency, FLOPs, params and budget margin.

``archs_sampled`` counts every arch the strategy handed out in the search (the FP-NAS vs
PARSEC cost metric; warm-up paths are not counted, they are the same for all) plus every
candidate a training sampler scored itself.

The pieces, one job each: ``config`` (settings and their checks), ``costs`` (the budget),
``run_setup`` (data, strategy, samplers), ``train_samplers`` / ``greedynas`` (which paths
train), ``train_step`` (the SGD step, DDP), ``strategy_step`` (score, shape, tell, log),
``curriculum`` (the active classes of an epoch), ``epoch`` (one epoch of both), ``checkpoint``,
``final`` (result, Pareto front), ``outputs`` (run files).  This module only runs them in order.

Outputs in ``out`` (``runs/NAME``): ``config.json``, ``log.jsonl`` (one line per strategy
step), ``checkpoint.pt`` after every epoch, ``result.json``, ``supernet.pt``, ``search.png``,
``pareto.json`` and ``pareto.png``.  The supernet's learning rate is constant (SGD, Nesterov
momentum): a schedule over the total epochs would change the past when ``--resume`` extends a
run with more epochs.  (FP-NAS's default switch epoch is half of the search epochs of the
*current* ``epochs``, and GreedyNAS's exploitation schedule spans the current epochs, so
extending a run moves them for the steps still to come; a given ``switch_epoch`` does not move.)
``resume=True`` continues from the checkpoint's epoch (the log is cut back to the checkpoint's
last step, so no step appears twice); see ``checkpoint.py``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from hwnas.search.checkpoint import open_run, restore_checkpoint, save_checkpoint
from hwnas.search.config import SearchConfig, SearchResult
from hwnas.search.epoch import search_epoch
from hwnas.search.final import final_result
from hwnas.search.loop_state import LoopState
from hwnas.search.outputs import plot_log, read_log, truncate_log
from hwnas.search.run_setup import setup, switch_epoch
from hwnas.search.strategy_step import search_stage
from hwnas.search.train_step import rank_paths, supernet_step

log = logging.getLogger(__name__)

# the names other code used when all of this lived here (benchmarks/ddp_bench.py, tests);
# ``_final_result`` is looked up here at call time, so a test may wrap it
_Loop, _rank_paths, _supernet_step, _final_result = LoopState, rank_paths, supernet_step, final_result

__all__ = ["SearchConfig", "SearchResult", "plot_log", "read_log", "run_search", "switch_epoch"]


def run_search(config: SearchConfig, progress: Callable[[dict], None] | None = None) -> SearchResult:
    """Run (or resume) one search; see the module docstring.

    torch runs with ``config.threads`` threads (one by default: the supernet's small per-path
    convs ran 5x slower with two on a loaded 2-vCPU machine) and gets its setting back after.
    Under ``torchrun`` every rank calls this; they join one process group (``hwnas.distributed``)
    and return the same result, and only rank 0 writes files or calls ``progress``."""
    from hwnas.distributed import process_group
    from hwnas.torch_threads import torch_threads

    with torch_threads(config.threads), process_group(config.device) as world:
        return _run_search(config, progress if world.is_main else None, world)


def _run_search(config: SearchConfig, progress: Callable[[dict], None] | None, world) -> SearchResult:
    from hwnas.distributed import (agree, broadcast_buffers, broadcast_object, check_identical, rank_device,
                                   wrap_for_training)
    from hwnas.nn.supernet import Supernet

    out = Path(config.out) if config.out else None
    # rank 0 reads the checkpoint and hands it to the others (nodes need not share a disk)
    checkpoint = agree(world, lambda: open_run(config, out), main_only=True)
    run = agree(world, lambda: setup(config, out, world))
    strategy = run.strategy

    device = rank_device(config.device, world)
    net = Supernet(run.space, run.data.num_classes, run.res, seed=config.seed, private_bn=config.private_bn).to(device)
    optimizer = _sgd(config, net.parameters())
    start_epoch, step, elapsed = 0, 0, 0.0
    if checkpoint is not None and checkpoint["epoch"] > config.warmup_epochs:  # it holds the sampler's optimizer
        optimizer = _start_sampler(config, net, run.train_sampler) or optimizer
    if checkpoint is not None:
        start_epoch, step, elapsed = restore_checkpoint(checkpoint, net, optimizer, strategy, run.train_sampler,
                                                        run.warm_rng, curriculum=run.curriculum)
        if world.is_main:
            truncate_log(out / "log.jsonl", step)
            log.info("resuming %s at epoch %d (step %d; written by %d rank(s), now %d)", out, start_epoch, step,
                     checkpoint.get("world_size", 1), world.size)
    elif out is not None and world.is_main and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    train_net = wrap_for_training(net, world, config.grad_sync, device)

    t_start = time.perf_counter()

    def clock() -> float:  # run time, the checkpoint's share included
        return elapsed + time.perf_counter() - t_start

    def emit(event: dict) -> None:
        if progress is not None:
            progress(event)

    loop = LoopState(config, world, run.space, net, train_net, optimizer, strategy, run.costs, run.data,
                     run.steps_per_epoch, run.val_batch, clock, emit, train_sampler=run.train_sampler,
                     curriculum=run.curriculum)
    loop.log_f = open(out / "log.jsonl", "a") if out is not None and world.is_main else None
    try:
        for epoch in range(start_epoch, config.epochs):
            if epoch > config.warmup_epochs and run.train_sampler.finished:  # stopped early (and resumed)
                break
            if epoch == config.warmup_epochs:  # from here a sampler may train only some weights (BN-NAS: BN)
                loop.optimizer = _start_sampler(config, net, run.train_sampler) or loop.optimizer
            step = search_epoch(loop, run.warm_sampler, epoch, step)
            broadcast_buffers(net, world)  # BN running statistics: rank 0's, before they are saved
            check_identical({"strategy": strategy.state_dict(), "train_sampler": run.train_sampler.state_dict()},
                            world, "distribution states")
            if out is not None and world.is_main:
                save_checkpoint(out / "checkpoint.pt", loop, run.warm_rng, epoch, step)
            emit({"stage": "epoch", "epoch": epoch + 1, "epochs": config.epochs})
        step = search_stage(loop, step)  # a kill here resumes from the last epoch's checkpoint
    finally:
        if loop.log_f is not None:
            loop.log_f.close()
    result = broadcast_object(_final_result(loop, run.cost_res, step, out), world)
    loop.train_net = train_net = None  # drop the DDP wrapper before the process group goes
    return result  # every rank returns rank 0's result (the same but for its own clock)


def _sgd(config, params):
    import torch

    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=True)


def _start_sampler(config, net, sampler):
    """Start the training sampler on the supernet as warm-up ends (``TrainSampler.begin_training``; Pi-NAS
    copies its teacher) and return the optimizer of the epochs after warm-up over its parameter
    groups (``TrainSampler.train_params``; BN-NAS: only BN, the rest frozen), or None when the
    sampler trains every weight (the warm-up's optimizer then continues, momentum and all)."""
    sampler.begin_training(net)
    groups = sampler.train_params(net)
    return None if groups is None else _sgd(config, groups)
