"""One step of a differentiable strategy (DMaskingNAS): its gates learn on a validation batch by
the gradient of the relaxed supernet's loss, not from told rewards.

Why its own module: ask/tell cannot carry ``d loss / d alpha`` (the brief's
``DifferentiableStrategy`` protocol, ``../shared/research/seed_strategies.md`` 3.7), so after each
training step on the train split (the relaxed path of ``dmasking.RelaxedSampler``), this step
runs the relaxed forward on the step's validation batch with Gumbel gates that carry gradient,
adds the budget's differentiable penalty on the distribution's probabilities, and hands the
loss to ``strategy.relaxed_update``: FBNet's alternation of weights on the train split and
architecture parameters on the validation split (Wu et al. 2019, Sec. 3.4 [paper?]).

Then the distribution's most likely arch is scored on the same batch with the shared weights
(BN batch statistics, as every strategy step scores) and recorded: the log line, the Pareto
front's candidates and ``archs_sampled`` (one arch per step) come from it.  Under torchrun every
rank computes the same step on the same batch from the same gates (the strategy's generator is
replicated), so the distributions stay identical.
"""
from __future__ import annotations

from hwnas.search.strategy_step import log_record, step_record


def relaxed_strategy_step(loop, vidx, step: int, epoch: int, train_loss) -> dict:
    """Update the strategy's gates on validation batch ``vidx``; returns (and logs) the step's record."""
    import torch.nn.functional as F

    costs, strategy, net = loop.costs, loop.strategy, loop.net
    xva, yva = loop.data.val.tensors
    param = next(net.parameters())
    x, y = xva[vidx].to(param.device, param.dtype), yva[vidx].to(param.device)
    tau = strategy.temperature()
    gates = strategy.sample_gates(requires_grad=True)
    with net.batch_stats():
        loss = F.cross_entropy(net.forward_relaxed(x, gates), y)
    relaxed_loss = float(loss.detach())
    if costs.penalty_fn is not None:
        loss = loss + costs.penalty_fn(strategy.probs())
    strategy.relaxed_update(loss)
    top = strategy.dist.argmax()
    losses, accs = loop.evaluate([top], xva[vidx], yva[vidx], loop.vb)
    raw = loop.reward_of(losses, accs, [top])
    strategy.record(top, float(raw[0]))
    arch_costs = costs.cost_fn([top]) if costs.cost_fn is not None else None
    cost_kind = None if costs.budget is None else costs.budget.kind
    rec = step_record(strategy, step, epoch, [top], losses, accs, raw, arch_costs, costs.budget,
                      costs.expected_fn, costs.lat_fn, train_loss, cost_kind, loop.archs_sampled())
    rec.update(relaxed_loss=round(relaxed_loss, 5), temperature=round(tau, 5))
    return log_record(loop, rec)
