"""The end of a run: the final arch under the budget, its Pareto front, ``result.json``.

Why its own module: what a run reports (``SearchResult``) and how the final arch is picked
(``penalty.select_final``: the strategy's most preferred arch that meets the budget) do not
depend on how the supernet was trained, so every strategy and training sampler ends here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hwnas.search import pareto
from hwnas.search import penalty as pen
from hwnas.search.config import SearchConfig, SearchResult
from hwnas.search.costs import RunCosts
from hwnas.search.outputs import plot_log, read_log, write_json


def final_result(loop, cost_res: int | None, step: int, out: Path | None) -> SearchResult:
    """Pick the final arch (``penalty.select_final``), measure it, and (rank 0) write the run's result files."""
    import torch

    from hwnas.cost import arch_cost
    from hwnas.nn.supernet_train import evaluate_arch

    config, space, net, strategy, costs, data = (loop.config, loop.space, loop.net, loop.strategy, loop.costs,
                                                 loop.data)
    fallback = costs.crange.min_arch if costs.crange is not None else None
    choice = pen.select_final(strategy, costs.cost_fn, costs.limit, fallback=fallback)
    points, cost_kind = pareto_points(loop, cost_res)
    refinement = None
    if config.refine:  # one process only (``run_setup.setup``)
        refinement, points = _refine(loop, points, choice, cost_res)
        choice = pen.select_final(strategy, costs.cost_fn, costs.limit, fallback=fallback)
        refinement = dataclasses.replace(
            refinement, final_in_fit=str(choice.arch) in {r["arch"] for r in refinement.measured})
    arch = choice.arch
    xva, yva = data.val.tensors
    val_loss, val_acc = evaluate_arch(net, arch, (xva, yva), batch_size=loop.vb)
    ac = arch_cost(space, arch, cost_res, data.num_classes)
    wall = loop.clock()
    pred_ms = float(costs.lat_fn([arch])[0]) if costs.lat_fn is not None else None
    margin = None
    if costs.budget is not None:
        margin = costs.budget.margin(pred_ms if costs.budget.kind == "latency" else ac.flops)
    result = SearchResult(
        space=space.name, arch=str(arch), resolution=space.resolution(arch, cost_res), strategy=config.strategy,
        seed=config.seed, dataset=data.name, predictor=config.predictor,
        latency_budget_ms=config.latency_budget_ms, flops_budget=config.flops_budget, penalty=config.penalty,
        predicted_latency_ms=pred_ms, flops=int(ac.flops), params=int(ac.params),
        supernet_val_acc=float(val_acc), supernet_val_loss=float(val_loss),
        archs_sampled=loop.archs_sampled(), search_steps=int(step), epochs=config.epochs,
        wall_time_s=round(float(wall), 3), budget_margin=None if margin is None else float(margin),
        final_choice=choice.how,
        final_log_prob=strategy.log_prob(arch) if strategy.is_distribution else None,
        entropy=strategy.entropy() if strategy.is_distribution else None,
        switched_at=getattr(strategy, "switched_at", None), out=None if out is None else str(out),
        budget_quantile=config.budget_quantile, world_size=loop.world.size,
        train_stopped_at=loop.train_sampler.stopped_at,
        refine=None if refinement is None else refinement.to_dict(),
    )
    per_budget = per_budget_picks(config, costs, points, result, choice.cost)
    result = dataclasses.replace(result, per_budget=per_budget, pareto_front=len(pareto.front(points)))
    if out is not None and loop.world.is_main:
        torch.save(net.state_dict(), out / "supernet.pt")
        write_json(out / "result.json", result.to_dict())
        write_json(out / "pareto.json", pareto.to_json(points, cost_kind, per_budget))
        pareto.plot(points, per_budget, cost_kind, out / "pareto.png", f"{config.strategy} on {space.name}")
        records = read_log(out / "log.jsonl") if (out / "log.jsonl").exists() else []
        if records:
            plot_log(records, out / "search.png", f"{config.strategy} on {space.name}: {arch}")
    return result


def _refine(loop, points, choice, cost_res):
    """``--refine``: measure the region around the budget, swap the run's latency costs for the
    adapted predictor's (``hwnas.search.refine``), re-cost the scored candidates."""
    from hwnas.search import refine

    config, space, costs = loop.config, loop.space, loop.costs
    archs = refine.region(points, costs.limit, int(config.refine), exclude=str(choice.arch))
    resolution = space.resolution(choice.arch, cost_res)  # as the export's check of the pick times it
    base_final_ms = float(costs.lat_fn([choice.arch])[0])
    adapted, measured, speed = refine.adapt_to_region(space, costs.predictor, archs, resolution,
                                                      threads=config.threads or 1)
    costs.predictor = adapted
    costs.cost_fn = pen.latency_cost_fn(adapted, quantile=config.budget_quantile)
    # as ``costs.data_costs``: without a tail budget the cost function already predicts (and memoises) the latency
    costs.lat_fn = costs.cost_fn if config.budget_quantile is None else pen.latency_cost_fn(adapted)
    new_cost = costs.cost_fn([space.parse(p.arch) for p in points])
    points = [dataclasses.replace(p, cost=float(c)) for p, c in zip(points, new_cost)]
    return refine.Refinement(measured=tuple(measured), loo=adapted.metrics_["loo"], speed_factor=float(speed),
                             base_final=str(choice.arch), base_final_ms=base_final_ms), points


def pareto_points(loop, cost_res):
    """Candidates of ``pareto.candidates`` scored on the whole validation split (the ranks share
    the scoring), with their cost (the budget's cost; else predicted latency; else FLOPs)."""
    from hwnas.cost import arch_cost

    config, space, strategy, costs, data = loop.config, loop.space, loop.strategy, loop.costs, loop.data
    sampled = {a: int(rec[1]) for a, rec in strategy._records.items()}
    pool = pareto.candidates(space, sampled, strategy, seed=config.seed)
    archs = [space.parse(a) for a in pool]
    if costs.cost_fn is not None:
        cost_kind, cost = costs.budget.kind, costs.cost_fn(archs)
    elif costs.lat_fn is not None:
        cost_kind, cost = "latency", costs.lat_fn(archs)
    else:
        cost_kind = "flops"
        cost = np.array([arch_cost(space, a, cost_res, data.num_classes).flops for a in archs], dtype=np.float64)
    losses, accs = loop.evaluate(archs, *data.val.tensors, loop.vb)
    points = [pareto.Point(str(a), float(c), float(acc), float(loss), pool[str(a)])
              for a, c, loss, acc in zip(archs, cost, losses, accs)]
    return points, cost_kind


def per_budget_picks(config: SearchConfig, costs: RunCosts, points, result: SearchResult, cost: float) -> list | None:
    """One pick per budget: the run's own pick (``cost`` by the budget's cost function) for its
    budget, the Pareto candidates' most accurate for the others."""
    if costs.budget is None:
        return None
    out = []
    for b in sorted({float(costs.limit), *(float(x) for x in config.budgets)}):
        if b == float(costs.limit):
            out.append({"budget": b, "arch": result.arch, "cost": float(cost), "acc": result.supernet_val_acc,
                        "how": f"search ({result.final_choice})"})
            continue
        p = pareto.pick(points, b)
        out.append({"budget": b, "arch": None if p is None else p.arch, "cost": None if p is None else p.cost,
                    "acc": None if p is None else p.acc, "how": "pareto" if p else "no candidate meets it"})
    return out
