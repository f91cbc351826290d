"""One strategy step: score archs on a validation batch, shape by the budget, ``tell``, log.

Why its own module: the coupled search (after each training step) and the search stage on the
frozen supernet (after the last epoch; SPOS, GreedyNAS, BN-NAS) are the same step on different
batches, and the log line it writes is what ``log.jsonl`` and ``search.png`` show.
"""
from __future__ import annotations

import numpy as np

from hwnas import jsonutil
from hwnas.search import penalty as pen


def strategy_step(loop, archs, vidx, step: int, epoch: int, train_loss, stage: bool = False) -> dict:
    """Rewards of ``archs`` on one validation batch, shaped by the budget, told to the strategy;
    returns (and, on rank 0, logs) the step's record.  Every rank scores its share of the archs,
    gathers all the rewards and applies the same update, so the ranks' distributions stay
    identical (checked every epoch) without broadcasting them."""
    config, costs, strategy = loop.config, loop.costs, loop.strategy
    xva, yva = loop.data.val.tensors
    if config.reward_kind == "bn":  # BN-NAS: scored from the BN weights alone, no image runs (loss, acc: null)
        losses = accs = np.full(len(archs), np.nan)
    else:
        losses, accs = loop.evaluate(archs, xva[vidx], yva[vidx], loop.vb)
    raw = loop.reward_of(losses, accs, archs)
    arch_costs = costs.cost_fn(archs) if costs.cost_fn is not None else None
    rewards = pen.shape_rewards(raw, arch_costs, costs.limit, config.penalty,
                                weight=config.penalty_weight, mnas_w=config.mnas_w, accuracy=accs)
    step_penalty = costs.penalty_fn
    if config.penalty == "logcost" and costs.budget is not None:
        step_penalty = pen.log_cost_penalty(strategy.dist, archs, arch_costs, costs.limit, config.penalty_weight)
    strategy.tell(archs, rewards, penalty=step_penalty)
    cost_kind = None if costs.budget is None else costs.budget.kind
    rec = step_record(strategy, step, epoch, archs, losses, accs, rewards, arch_costs, costs.budget,
                      costs.expected_fn, costs.lat_fn, train_loss, cost_kind, loop.archs_sampled())
    if stage:
        rec["phase"] = "search stage" if rec["phase"] == "-" else f"search stage ({rec['phase']})"
    return log_record(loop, rec)


def log_record(loop, rec: dict) -> dict:
    """Stamp a step's record with the run time and (rank 0) append it to ``log.jsonl``."""
    rec["time_s"] = round(loop.clock(), 3)
    if loop.log_f is not None:
        loop.log_f.write(jsonutil.dumps(rec) + "\n")
        loop.log_f.flush()
    return rec


def search_stage(loop, step: int) -> int:
    """``search_stage_steps`` ask/tell rounds on the frozen supernet (no weight update), on
    validation batches in a seeded order; returns the step counter.  The training sampler hands
    the strategy what it learnt first (GreedyNAS: its candidate pool seeds evolution)."""
    import torch

    config, vb = loop.config, loop.vb
    n_val = len(loop.data.val.tensors[1])
    if int(config.search_stage_steps) > 0:
        loop.train_sampler.before_search_stage(loop.strategy)
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + 999))
    for k in range(int(config.search_stage_steps)):
        start = (k * vb) % max(n_val - vb + 1, 1)
        step += 1
        rec = strategy_step(loop, loop.strategy.ask(), vperm[start:start + vb], step, config.epochs, None,
                            stage=True)
        loop.emit({"stage": "search", "epoch": config.epochs, "batch": k,
                   "steps_per_epoch": config.search_stage_steps, **rec})
    return step


def step_record(strategy, step, epoch, archs, losses, accs, rewards, costs, budget, expected_fn, lat_fn,
                train_loss, cost_kind, archs_sampled: int) -> dict:
    """One line of ``log.jsonl``: the step's scores and the strategy's state after its update."""
    import torch

    rec = {
        "step": step, "epoch": epoch, "k": len(archs), "archs_sampled": archs_sampled,
        "phase": strategy.phase, "train_loss": None if train_loss is None else round(train_loss, 5),
        "loss": round(float(losses.mean()), 5), "acc": round(float(accs.mean()), 5),
        "reward": round(float(np.mean(rewards)), 5),
        "entropy": None, "top_arch": None, "expected_cost": None, "expected_latency_ms": None,
        "cost_kind": cost_kind, "budget": None if budget is None else budget.limit,
        "mean_cost": None if costs is None else float(np.mean(costs)),
    }
    if strategy.is_distribution:
        rec["entropy"] = round(strategy.entropy(), 5)
        top = strategy.dist.argmax()
        rec["top_arch"] = str(top)
        if expected_fn is not None:
            with torch.no_grad():
                rec["expected_cost"] = float(expected_fn(strategy.probs()))
        if lat_fn is not None:
            if budget is not None and budget.kind == "latency" and rec["expected_cost"] is not None:
                rec["expected_latency_ms"] = rec["expected_cost"]
            else:
                rec["expected_latency_ms"] = float(lat_fn([top])[0])  # of the top arch
    else:
        rec["top_arch"] = str(strategy.best())
    return rec
