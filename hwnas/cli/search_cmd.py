"""``hwnas search``: FP-NAS (or PARSEC, GreedyNAS, ...) under a latency or FLOPs budget.

Thin: parses the options into a ``SearchConfig``, runs ``hwnas.search.run_search`` with a
rich progress bar, and prints a summary table (or ``--json``).
"""
from __future__ import annotations

import click

from hwnas.cli._common import console, echo_json, human, json_option
from hwnas.cli._progress import SearchBar


@click.command("search")
@click.option("--space", default="tiny", show_default=True, help="Search space name or YAML file.")
@click.option("--strategy", default="fpnas", show_default=True,
              help="fpnas | parsec | random | ddpnas | mdenas | evolution | greedynas (GreedyNAS: greedy "
                   "supernet training, then evolution on the frozen supernet) | bnnas (BN-NAS: train only BN, "
                   "then evolution by the BN indicator, without data) | attentivenas (AttentiveNAS: sandwich "
                   "rule with a best-of-k path at a sampled FLOPs target and in-place distillation, then "
                   "evolution) | dmasking (FBNetV2's DMaskingNAS: Gumbel-weighted channel masks in one relaxed "
                   "forward, gates learnt by gradient) | danas (DA-NAS-style: PARSEC with a class curriculum, "
                   "pruning choices at each stage end; needs --class-schedule) | pinas (Pi-NAS-style, supervised "
                   "adaptation: two disjoint paths with a cross-path mean-teacher consistency, then evolution).")
@click.option("--latency-budget", "latency_budget", help="Predicted-latency budget: '2ms', '2.5' (ms), '500us'. Needs --predictor.")
@click.option("--flops-budget", "flops_budget", help="FLOPs (multiply-adds) budget: '300M', '1.5G', '20K'.")
@click.option("--latency-budgets", "latency_budgets", default=None, metavar="B1,B2,...",
              help="Several latency budgets, e.g. 0.1,0.15,0.2ms: one supernet, steered by the tightest, and one "
                   "pick per budget from its Pareto front (result.json 'per_budget'; export one with "
                   "'hwnas export --run R --budget B').")
@click.option("--budget-quantile", type=float, default=None,
              help="Tail-latency budget: the arch's QUANTILE (e.g. 0.9) of predicted latency, from the "
                   "predictor's uncertainty, must meet the budget.")
@click.option("--refine", type=int, default=0, show_default=True, metavar="N",
              help="Before the final pick, time the N most accurate scored candidates near the latency budget on "
                   "this machine, adapt the predictor to them and pick again (result.json 'refine'; 0: off). "
                   "Searches pick where the predictor is optimistic; this corrects it there.")
@click.option("--penalty", type=click.Choice(["hinge", "mnas", "differentiable", "logcost"]), default=None,
              help="hinge (default; dmasking: differentiable): reward - beta*max(0, c/T - 1); mnas: acc*(c/T)^w; "
                   "differentiable: expected cost of the distribution added to its loss; logcost: FP-NAS's "
                   "beta*log C(alpha) term.")
@click.option("--penalty-weight", type=float, default=2.0, show_default=True,
              help="beta of the hinge penalty / mu of the differentiable penalty.")
@click.option("--predictor", type=click.Path(dir_okay=False), help="Latency predictor file (.hwp) from `hwnas predictor`.")
@click.option("--force", is_flag=True, help="Use the predictor even if it was trained for another space/device.")
@click.option("--dataset", default="digits", show_default=True, help="digits | cifar10:DIR | imagefolder:DIR.")
@click.option("--limit", type=int, help="Use at most this many images (train + val) for a quick run.")
@click.option("--epochs", type=int, default=4, show_default=True, help="Total epochs, warm-up included.")
@click.option("--warmup-epochs", type=int, default=1, show_default=True, help="Epochs of uniform path sampling first.")
@click.option("--samples", "samples_per_step", type=int, default=8, show_default=True,
              help="Archs per step (PARSEC's K; FP-NAS's K at the start).")
@click.option("--train-paths", type=int, default=1, show_default=True,
              help="Sampled paths trained per supernet step (0: all K, as PARSEC).")
@click.option("--arch-lr", type=float, default=0.3, show_default=True,
              help="Adam learning rate of the architecture distribution: higher converges in fewer steps.")
@click.option("--switch-epoch", type=int, default=None,
              help="fpnas: search epochs in the factorized phase before the switch to the joint distribution "
                   "[default: half of the search epochs].")
@click.option("--estimator", type=click.Choice(["importance", "reinforce"]), default="importance", show_default=True,
              help="parsec/fpnas: PARSEC's self-normalised likelihood weights, or REINFORCE with a moving baseline.")
@click.option("--weight-estimator", type=click.Choice(["mean", "importance"]), default="mean", show_default=True,
              help="Supernet gradient over the trained paths: plain mean, or PARSEC's likelihood weights "
                   "(needs --train-paths 0).")
@click.option("--lam", type=float, default=None,
              help="fpnas: K = max(1, round(lam * entropy)) [default: 0.25, the paper's].")
@click.option("--train-sampler", default=None, metavar="strategy|uniform|greedy|bn_only|attentive|pinas|relaxed",
              help="Paths the supernet trains on: the strategy's samples (coupled search), uniform single "
                   "paths (SPOS), GreedyNAS's best k of m scored paths, BN-NAS's BN-only training, AttentiveNAS's "
                   "sandwich or Pi-NAS's two disjoint paths (these need a search stage), or the relaxed forward "
                   "(dmasking's, and only it) [default: the strategy's preset, else strategy].")
@click.option("--sampler-param", "sampler_params", multiple=True, metavar="KEY=VALUE",
              help="A training sampler hyper-parameter, repeatable, e.g. --sampler-param momentum=0.999 "
                   "(pinas), pick=worstup (attentive); see the sampler's docstring.")
@click.option("--strategy-param", "strategy_params", multiple=True, metavar="KEY=VALUE",
              help="A strategy hyper-parameter, repeatable, e.g. --strategy-param tau0=2 (dmasking), "
                   "keep=0.3 (danas), population=20 (evolution); see the strategy's docstring.")
@click.option("--search-stage-steps", type=int, default=None,
              help="Ask/tell rounds on the trained, frozen supernet after the last epoch (two-stage search, "
                   "e.g. --strategy evolution --train-sampler uniform --search-stage-steps 20) "
                   "[default: 20 for greedynas, bnnas, attentivenas, pinas, else 0].")
@click.option("--pool-size", type=int, default=None,
              help="greedy sampler: capacity n of the candidate pool of good paths [default: 50].")
@click.option("--candidates", type=int, default=None,
              help="greedy sampler: paths m sampled and scored per refill [default: 10].")
@click.option("--keep-top", type=int, default=None,
              help="greedy sampler: the k best of the m scored paths that train [default: 5].")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--reward", type=click.Choice(["loss", "acc", "bn"]), default=None,
              help="Reward of a sampled arch on a validation batch: -loss or accuracy; bn: BN-NAS's indicator "
                   "from the weights, no data (needs --private-bn project) [default: bn for bnnas, acc for "
                   "ddpnas and mdenas, whose rules assume it, else loss].")
@click.option("--private-bn", default=None, metavar="POSITIONS",
              help="BN positions (comma-separated: expand, spatial, project) where each choice of a layer gets "
                   "its own BN [default: project for bnnas, else none].")
@click.option("--class-schedule", "class_schedule", default=None, metavar="N1,N2,...",
              help="Class curriculum (DA-NAS-style): active classes per stage of the search epochs, easiest "
                   "first (per-class accuracy of the warm-up supernet), e.g. 3,6,10 on digits; strictly "
                   "increasing, the last the dataset's class count; any strategy; required by danas "
                   "[default: none].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="torch CPU threads (0: torch's default; small per-path convs run best on one).")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda",
              help="Where the supernet trains; under torchrun, cuda means one GPU per rank (NCCL).")
@click.option("--rank-paths", type=click.Choice(["own", "shared"]), default="own", show_default=True,
              help="Under torchrun: every rank trains its own sampled paths (N ranks, N times the paths a step), "
                   "or all train rank 0's (one process with N times the batch).")
@click.option("--grad-sync", type=click.Choice(["ddp", "allreduce"]), default="ddp", show_default=True,
              help="Under torchrun: DistributedDataParallel (find_unused_parameters), or one flat all-reduce "
                   "after the backward.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory, e.g. runs/NAME.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@json_option
def search(space, strategy, latency_budget, flops_budget, latency_budgets, budget_quantile, refine, penalty, penalty_weight, predictor, force, dataset, limit,
           epochs, warmup_epochs, samples_per_step, train_paths, arch_lr, switch_epoch, estimator, weight_estimator, lam,
           train_sampler, sampler_params, strategy_params, search_stage_steps, pool_size, candidates, keep_top, batch_size, reward, private_bn, class_schedule, seed, threads, device, rank_paths, grad_sync, out, resume,
           as_json):
    """Search the most accurate architecture within a latency or FLOPs budget.

    \b
    Examples:
      hwnas search --space tiny --flops-budget 4M --epochs 3 --out runs/f4m
      hwnas search --strategy fpnas --latency-budget 2ms --predictor pred.hwp --out runs/l2
      hwnas search --out runs/l2 --latency-budget 2ms --predictor pred.hwp --epochs 6 --resume
      hwnas search --strategy greedynas --flops-budget 4M --out runs/greedy
      hwnas search --strategy bnnas --flops-budget 4M --out runs/bnnas

    \b
    Data-parallel (DDP; --batch-size is the batch of a step over all ranks):
      torchrun --nproc-per-node 2 -m hwnas search --flops-budget 4M --out runs/ddp
      torchrun --nproc-per-node 8 -m hwnas search --device cuda ... --out runs/ddp8
    """
    from hwnas.search import SearchConfig, parse_flops, parse_latency_ms, run_search

    budgets = ()
    if latency_budgets is not None:
        if latency_budget is not None:
            raise click.UsageError("give --latency-budget or --latency-budgets, not both")
        budgets = tuple(sorted(parse_latency_ms(b) for b in latency_budgets.split(",") if b.strip()))
        if not budgets:
            raise click.UsageError("--latency-budgets needs at least one budget, e.g. 0.1,0.2ms")
        latency_budget = f"{budgets[0]}ms"
    sparams = _key_values(strategy_params, "--strategy-param")
    if strategy in ("parsec", "fpnas", "danas"):
        sparams.setdefault("estimator", estimator)
    if lam is not None:
        if strategy != "fpnas":
            raise click.UsageError("--lam only applies to --strategy fpnas")
        sparams["lam"] = lam
    greedy = {k: v for k, v in (("pool_size", pool_size), ("candidates", candidates), ("keep_top", keep_top))
              if v is not None}
    greedy.update(_key_values(sampler_params, "--sampler-param"))
    config = SearchConfig(
        space=space, strategy=strategy, dataset=dataset, epochs=epochs, warmup_epochs=warmup_epochs, seed=seed,
        out=out, latency_budget_ms=None if latency_budget is None else parse_latency_ms(latency_budget),
        flops_budget=None if flops_budget is None else parse_flops(flops_budget), penalty=penalty,
        budgets=budgets, budget_quantile=budget_quantile, refine=refine,
        penalty_weight=penalty_weight, predictor=predictor, force=force, reward=reward,
        samples_per_step=samples_per_step, train_paths=train_paths, arch_lr=arch_lr, switch_epoch=switch_epoch,
        weight_estimator=weight_estimator, strategy_params=sparams, train_sampler=train_sampler,
        search_stage_steps=search_stage_steps, train_sampler_params=greedy,
        private_bn=None if private_bn is None else tuple(p.strip() for p in private_bn.split(",") if p.strip()),
        class_schedule=None if class_schedule is None else _class_schedule(class_schedule),
        batch_size=batch_size, limit=limit, threads=threads, resume=resume, device=device, rank_paths=rank_paths,
        grad_sync=grad_sync,
    )
    from hwnas.distributed import env_world

    if not env_world().is_main:  # ranks > 0 train and score; rank 0 reports
        run_search(config)
        return
    if as_json:
        result = run_search(config)
        return echo_json(result.to_dict())
    with SearchBar(epochs, strategy) as bar:
        result = run_search(config, progress=bar)
    _summary(result)


def _key_values(items, flag: str) -> dict:
    """``("momentum=0.99", "pick=worstup")`` -> ``{"momentum": 0.99, "pick": "worstup"}``: a value is
    read as JSON (numbers, true/false, null) when it parses, else kept as text; the sampler or
    strategy checks the names and values before anything runs."""
    import json

    from hwnas.errors import SearchError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SearchError(f"{flag} takes KEY=VALUE, e.g. {flag} momentum=0.99, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _class_schedule(text: str) -> tuple[int, ...]:
    """``--class-schedule 3,6,10`` -> (3, 6, 10); the config checks the counts."""
    from hwnas.errors import SearchError

    try:
        return tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise SearchError(f"--class-schedule takes class counts, e.g. 3,6,10, got {text!r}") from None


def _summary(r) -> None:
    from rich.table import Table

    t = Table(title=f"hwnas search: {r.strategy} on {r.space}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("arch", r.arch)
    t.add_row("resolution", str(r.resolution))
    if r.latency_budget_ms is not None:
        t.add_row("latency budget", f"{r.latency_budget_ms:.4g} ms")
    if r.flops_budget is not None:
        t.add_row("FLOPs budget", human(r.flops_budget))
    if r.predicted_latency_ms is not None:
        t.add_row("predicted latency", f"{r.predicted_latency_ms:.4g} ms")
    t.add_row("FLOPs", human(r.flops))
    t.add_row("params", human(r.params))
    if r.budget_margin is not None:
        t.add_row("inside budget by", f"{100 * r.budget_margin:.1f}%")
    t.add_row("supernet val acc", f"{r.supernet_val_acc:.4f}")
    t.add_row("archs sampled", str(r.archs_sampled))
    for b in r.per_budget or []:
        if b["how"].startswith("search"):
            continue
        what = b["arch"] if b["arch"] else "no candidate meets it"
        cost = "" if b["cost"] is None else f" ({b['cost']:.4g}, supernet acc {b['acc']:.3f})"
        t.add_row(f"pick for {b['budget']:.4g}", f"{what}{cost}")
    if r.refine:
        f = r.refine
        changed = "kept" if f["base_final"] == r.arch else f"was {f['base_final']}"
        t.add_row("refined", f"{len(f['measured'])} archs measured near the budget, leave-one-out MAPE "
                             f"{100 * f['loo']['mape']:.1f}%; base prediction of the search's pick "
                             f"{f['base_final_ms']:.4g} ms ({changed})")
    if r.pareto_front:
        t.add_row("Pareto front", f"{r.pareto_front} archs (pareto.json, pareto.png)")
    if r.world_size > 1:
        t.add_row("ranks", f"{r.world_size} (torchrun)")
    t.add_row("wall time", f"{r.wall_time_s:.1f} s")
    t.add_row("run dir", str(r.out))
    console().print(t)
