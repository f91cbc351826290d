"""``hwnas demo``: the main job on the embedded defaults (README command one)."""
from __future__ import annotations

import click

from hwnas.cli._common import echo_json, human, json_option


@click.command()
@click.option("--out", default=None, help="Run folder (default: runs/demo-<date>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (profiling and search pick up where they stopped).")
@click.option("--quick", is_flag=True, help="Skip profiling: use the shipped CPU latency dataset (data/latency/), "
              "measured on another machine, and adapt its predictor to this one from --adapt-archs archs.")
@click.option("--adapt-archs", default=20, show_default=True, type=int,
              help="With --quick: archs measured here to adapt the shipped data's predictor (0: use it as is).")
@click.option("--num-archs", default=300, show_default=True, type=click.IntRange(min=10), help="Archs to profile.")
@click.option("--latency-budget", default=None, help="Latency budget, e.g. 0.2ms (default: the 30th percentile "
              "of the measured latencies).")
@click.option("--budget-confidence", default=0.9, show_default=True, type=float,
              help="The search's pick must meet the budget with this probability under the predictor's "
                   "uncertainty (0: its median prediction must).")
@click.option("--measured-pick", default=8, show_default=True, type=click.IntRange(min=0),
              help="Before training, time up to N candidates here (the search's pick first, then its Pareto archs) "
                   "and ship the first measured 5% under the budget (0: the search's pick as predicted).")
@click.option("--strategy", default="fpnas", show_default=True, help="Search strategy (fpnas, parsec, random, ...).")
@click.option("--search-epochs", default=6, show_default=True, type=click.IntRange(min=2), help="Supernet epochs, warm-up included.")
@click.option("--export-epochs", default=5, show_default=True, type=click.IntRange(min=0), help="Stand-alone training epochs of the winner.")
@click.option("--limit", default=None, type=click.IntRange(min=50), help="Use only this many images (a quick look).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of every stage.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="torch threads for training.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the search's supernet trains; under torchrun, cuda means one GPU per rank (NCCL).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="The search's batch of one step (over all ranks under torchrun: a multiple of their number).")
@json_option
def demo(out, resume, quick, adapt_archs, num_archs, latency_budget, budget_confidence, measured_pick, strategy, search_epochs, export_epochs, limit, seed,
         threads, device, batch_size, as_json):
    """Run profile -> predictor -> search -> export on the embedded defaults.

    On a machine with no GPU and no datasets: profiles the `tiny` space on the CPU with ONNX
    Runtime, trains an MLP latency predictor and prints its held-out error, picks a latency
    budget inside the measured range, runs the FP-NAS search on scikit-learn's digits
    (upscaled to 32x32), trains and exports the winner to ONNX, verifies it and measures it.
    Every stage's output stays in one run folder.

    \b
    Data-parallel supernet training: torchrun --nproc-per-node 2 -m hwnas demo
    (rank 0 profiles, trains the predictor and exports; every rank trains the supernet;
    the ranks must share the run folder: one machine, or --out on a shared disk).
    """
    import contextlib

    from hwnas.cli._progress import CampaignBar, ExportBar, SearchBar
    from hwnas.pipeline import PipelineConfig, default_out, run_pipeline
    from hwnas.search import parse_latency_ms

    config = PipelineConfig(
        out=out or default_out(), quick=quick, adapt_archs=adapt_archs, num_archs=num_archs,
        latency_budget_ms=None if latency_budget is None else parse_latency_ms(latency_budget),
        budget_confidence=budget_confidence or None, measured_pick=measured_pick, strategy=strategy, search_epochs=search_epochs,
        export_epochs=export_epochs, limit=limit, seed=seed, threads=threads, device=device, batch_size=batch_size,
        resume=resume,
    )
    from hwnas.distributed import env_world

    if as_json or not env_world().is_main:  # torchrun ranks > 0 work silently; rank 0 reports
        res = run_pipeline(config)
        return echo_json(res.to_dict()) if as_json and env_world().is_main else None
    from rich.console import Console

    con = Console(stderr=True)
    con.print(f"[bold]hwnas demo[/] -> {config.out}")
    bars = {"profile": CampaignBar(num_archs), "adapt": CampaignBar(adapt_archs),
            "search": SearchBar(search_epochs, strategy), "export": ExportBar()}

    def on_stage(stage: str, message: str) -> None:
        if stage in bars:  # one live display at a time: a stage's bar ends with the stage
            bars[stage].stop()
        con.print(f"[green]{stage:>9}[/] {message}")

    with contextlib.ExitStack() as stack:
        for bar in bars.values():
            stack.enter_context(bar)
        res = run_pipeline(config, hooks={"profile": bars["profile"].row, "adapt": bars["adapt"].row,
                                          "search": bars["search"], "export": bars["export"]}, on_stage=on_stage)
    _summary(res)


def _summary(res) -> None:
    from rich.console import Console
    from rich.table import Table

    from hwnas.profiling.steal import contention_note

    ms = lambda v: "-" if v is None else f"{v:.4f} ms"  # noqa: E731
    t = Table(title=f"hwnas demo: {res.out}")
    t.add_column("")
    t.add_column("value", overflow="fold")
    t.add_row("latency budget", f"{ms(res.latency_budget_ms)} ({res.budget_source})")
    t.add_row("architecture", str(res.arch))
    conf = "" if res.budget_confidence is None else f" (median; the budget held with {res.budget_confidence:.0%} confidence)"
    t.add_row("predicted latency", ms(res.predicted_latency_ms) + conf)
    verdict = {True: "[green]within budget[/]", False: "[red]over budget[/]", None: ""}[res.within_budget]
    where = {"predictor": "the data's own reference", "calibrated here": "a reference calibrated here"}
    ref = (f" (timed against the canary, scaled by {where.get(res.measured_reference, res.measured_reference)})"
           if res.measured_reference else "")
    t.add_row("measured latency", f"{ms(res.measured_latency_ms)} {verdict}{ref}"
                                  f"{contention_note(res.measured_steal_share)}")
    if res.measured_pick:
        t.add_row("measured pick", f"{len(res.measured_pick['measured'])} candidate(s) timed before training: "
                                   f"{res.measured_pick['reason']}")
    if res.adapted:
        far = "" if res.canary_vs_data is None else f"; this machine's canary runs {res.canary_vs_data:.2f}x theirs"
        loo = res.adapted["loo_metrics"]
        t.add_row("latency data from", f"{res.adapted['base_device']} (shipped){far}; adapted to this machine "
                                       f"({res.adapted['device']}) from {res.adapted['archs']} archs measured here, "
                                       f"leave-one-out within 10% {100 * loo['within_10']:.0f}%, "
                                       f"Spearman rho {loo['spearman_rho']:.3f}")
    elif res.latency_device:
        far = "" if res.canary_vs_data is None else f"; this machine's canary runs {res.canary_vs_data:.2f}x theirs"
        t.add_row("latency data from", f"{res.latency_device}{far}")
    t.add_row("accuracy (val, torch / ONNX)", f"{res.accuracy:.3f} / {res.onnx_accuracy:.3f}")
    t.add_row("FLOPs (multiply-adds) / params", f"{human(res.flops)} / {human(res.params)}")
    m = res.predictor_metrics
    t.add_row("predictor held-out", f"within 10% {100 * m['within_10']:.1f}%, Kendall tau {m['kendall_tau']:.3f}")
    t.add_row("archs profiled / sampled by search", f"{res.archs_measured} / {res.archs_sampled}")
    if res.world_size > 1:
        t.add_row("supernet training", f"{res.world_size} ranks (torchrun)")
    t.add_row("time per stage", ", ".join(f"{k} {v:.0f} s" for k, v in res.stage_seconds.items()))
    t.add_row("model", str(res.onnx_path))
    Console().print(t)
