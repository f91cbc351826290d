"""``hwnas export`` and ``hwnas evaluate``: ship a searched arch as verified ONNX, and
measure any exported model.  Thin: parse, call ``hwnas.export``, draw progress and tables."""
from __future__ import annotations

import click

from hwnas.cli._common import echo_json, human, json_option
from hwnas.cli._progress import ExportBar
from hwnas.profiling.providers import EPS



def _pick_budget(run_dir, text):
    """--budget in the unit of the run's Pareto front: ms for latency, multiply-adds for FLOPs."""
    from hwnas.search import parse_flops, parse_latency_ms
    from hwnas.search.pareto import read_pareto

    if run_dir is None:
        raise click.UsageError("--budget chooses among a search run's picks: give --run")
    kind = read_pareto(run_dir)["cost_kind"]
    return parse_latency_ms(text) if kind == "latency" else float(parse_flops(text))


@click.command("export")
@click.option("--run", "run_dir", type=click.Path(), help="A 'hwnas search --out' folder (reads result.json).")
@click.option("--space", help="Search space of --arch (default: tiny).")
@click.option("--arch", "arch", help="Architecture string (canonical, see 'hwnas space show').")
@click.option("--dataset", help="digits | cifar10:DIR | imagefolder:DIR (default: the run's, else digits).")
@click.option("--limit", type=int, help="Use only this many images (quick runs).")
@click.option("--epochs", type=int, default=10, show_default=True,
              help="Training epochs; 0 exports untrained (dry run).")
@click.option("--from-supernet", is_flag=True, help="Start from the run's supernet weights, then fine-tune.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=float, help="Peak learning rate of the cosine schedule (default per optimizer).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--ep", type=click.Choice(list(EPS)), default="cpu", show_default=True,
              help="Execution provider to measure on.")
@click.option("--allow-fallback", is_flag=True, help="Measure on the CPU if the GPU provider cannot load.")
@click.option("--threads", type=int, default=1, show_default=True, help="ORT intra-op threads when measuring.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed latency runs.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch axis.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-threads", type=int,
              help="torch threads for training (1 is fastest for small nets on busy CPUs).")
@click.option("--latency-budget", help="Budget to compare with (e.g. 2ms; default: the run's).")
@click.option("--budget", "pick_budget", default=None,
              help="Ship the run's pick for this budget (e.g. 0.15ms, or 4M FLOPs): from 'hwnas search "
                   "--latency-budgets', else the most accurate Pareto-front arch meeting it (pareto.json).")
@click.option("--pareto-index", type=int, default=None,
              help="Ship the K-th arch of the run's Pareto front (0: the cheapest).")
@click.option("--predictor", type=click.Path(), help="Predictor file for the predicted latency (default: the run's).")
@click.option("--measured-pick", "measured_pick", type=int, default=0, show_default=True, metavar="N",
              help="Before training, time up to N candidates on this machine (the run's pick, then its Pareto "
                   "archs meeting the budget, most accurate first) and ship the first measured at least "
                   "--measured-margin under the latency budget. 0: ship the run's pick as predicted.")
@click.option("--measured-margin", type=float, default=0.05, show_default=True,
              help="With --measured-pick: the share under the budget a candidate must measure (the final check "
                   "times the trained model again).")
@click.option("--top-k", "top_k", type=int, default=None, metavar="K",
              help="Train the run's K best candidates and pick one: its per-budget picks when it searched several "
                   "budgets, else its Pareto-front archs meeting its budget, ranked by supernet accuracy. Ships "
                   "the most accurate trained model that meets its budget (measured). --out is then a folder.")
@click.option("--ray", "ray_address", default=None, metavar="auto|local|HOST:PORT",
              help="With --top-k: train the candidates as Ray tasks (one CPU slot of --threads/--train-threads "
                   "cores, or one GPU, each); auto: the running cluster, else a local one.")
@click.option("--ray-resource", "ray_resource", default=None, metavar="NAME",
              help="With --ray: only on workers that advertise the custom resource NAME (one unit per candidate).")
@click.option("--out", required=True, type=click.Path(),
              help="Output .onnx file (model card written beside as .json); with --top-k a folder: "
                   "OUT/cand-<rank>-<arch>/model.onnx + model.json and OUT/candidates.json.")
@json_option
def export(run_dir, space, arch, dataset, limit, epochs, from_supernet, optimizer, lr, batch_size, ep,
           allow_fallback, threads, runs, dynamic_batch, opset, seed, train_threads, latency_budget, pick_budget,
           pareto_index, predictor, measured_pick, measured_margin, top_k, ray_address, ray_resource, out, as_json):
    """Train the chosen architecture, export ONNX and verify it.

    \b
    Verifies: onnx.checker; ONNX Runtime vs torch on real validation images (max abs
    difference, top-1 agreement); latency measured on --ep beside the predicted latency
    and the budget.  Writes OUT and the model card beside it (model.onnx -> model.json).

    \b
    With --top-k K the run's K best candidates are each trained, exported and measured
    (in turn here, or in parallel with --ray), each into OUT/cand-<rank>-<arch>/; then
    OUT/candidates.json lists every candidate's accuracy, latency and budget status and
    names the one picked: the most accurate that meets its budget.

    \b
    Examples:
      hwnas export --run runs/demo --epochs 10 --out runs/demo/model.onnx
      hwnas export --space tiny --arch k3_e2-skip-k3_e4-skip-k5_e2-skip --epochs 0 --out m.onnx
      hwnas export --run runs/demo --measured-pick 8 --out runs/demo/model.onnx
      hwnas export --run runs/demo --top-k 4 --ray auto --out runs/demo/top4
    """
    from hwnas.export import ExportConfig, export_arch
    from hwnas.search import parse_latency_ms

    budget_value = _pick_budget(run_dir, pick_budget) if pick_budget is not None else None
    cfg = ExportConfig(
        out=out, run_dir=run_dir, space=space, arch=arch, dataset=dataset, limit=limit, epochs=epochs,
        optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed, train_threads=train_threads,
        from_supernet=from_supernet, ep=ep,
        allow_fallback=allow_fallback, threads=threads, latency_runs=runs, dynamic_batch=dynamic_batch,
        opset=opset, latency_budget_ms=None if latency_budget is None else parse_latency_ms(latency_budget),
        predictor=predictor, budget=budget_value, pareto_index=pareto_index, measured_pick=measured_pick,
        measured_margin=measured_margin,
    )
    if top_k is not None:
        return _top_k(cfg, top_k, ray_address, ray_resource, as_json)
    if ray_address is not None or ray_resource is not None:
        raise click.UsageError("--ray / --ray-resource train --top-k candidates in parallel; give --top-k K")
    with ExportBar() as bar:
        result = export_arch(cfg, progress=bar)
    if as_json:
        d = result.to_dict()
        d.pop("card", None)
        return echo_json(d)
    _print_export(result)


def _top_k(cfg, top_k, ray_address, ray_resource, as_json):
    from hwnas.export_topk import export_top_k

    def done(rec, n, total):
        if as_json:
            return
        what = (f"accuracy {rec['accuracy']:.4f}, {_fmt_ms(rec['measured_latency_ms'])}, "
                f"{_BUDGET_WORD[rec['meets_budget']]}" if rec["status"] == "ok" else f"failed: {rec['error']}")
        click.echo(f"[{n}/{total}] {rec['dir']}: {what}", err=True)

    res = export_top_k(cfg, top_k, ray_address=ray_address, ray_resource=ray_resource, on_candidate=done)
    if as_json:
        return echo_json(res.summary)
    _print_top_k(res.summary, res.summary_path)


_BUDGET_WORD = {True: "within budget", False: "OVER budget", None: "no budget"}


def _print_top_k(s: dict, path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    unit = "ms" if s["cost_kind"] == "latency" else "MACs"
    t = Table(title=f"hwnas export --top-k {s['top_k']}: {s['selection']} ({s['backend']})")
    for col in ("", "candidate", "supernet acc", f"predicted ({unit})", "accuracy", "measured", "budget"):
        t.add_column(col, overflow="fold")
    for i, c in enumerate(s["candidates"]):
        mark = "[bold green]*[/]" if i == s["picked"] else ""
        cost = f"{c['predicted_cost']:.3f}" if s["cost_kind"] == "latency" else human(c["predicted_cost"])
        if c["status"] != "ok":
            t.add_row(mark, f"cand-{c['rank']}", f"{c['supernet_acc']:.4f}", cost, "[red]failed[/]", "-", c["error"][:60])
            continue
        word = {True: "[green]within[/]", False: "[red]OVER[/]", None: "-"}[c["meets_budget"]]
        t.add_row(mark, f"cand-{c['rank']}", f"{c['supernet_acc']:.4f}", cost, f"{c['accuracy']:.4f}",
                  _fmt_ms(c["measured_latency_ms"]), word)
    Console().print(t)
    if s["picked"] is None:
        click.echo(f"picked: none ({s['reason']}); summary: {path}")
    else:
        click.echo(f"picked: {s['picked_dir']} ({s['picked_arch']}), {s['reason']}\n  model: {s['picked_onnx']}\n"
                   f"  summary: {path}")


def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def _print_export(r) -> None:
    from rich.console import Console
    from rich.table import Table

    from hwnas.profiling.steal import contention_note

    t = Table(title=f"hwnas export: {r.onnx_path}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("architecture", f"{r.space}: {r.arch} @ {r.resolution}px")
    t.add_row("dataset", f"{r.dataset} ({r.num_classes} classes), {len(r.history)} epoch(s)")
    t.add_row("accuracy (val, top-1)", f"torch {r.accuracy:.4f} / ONNX {r.parity.onnx_accuracy:.4f}")
    t.add_row("parity (cpu)", f"max |diff| {r.parity.max_abs_diff:.2e} <= {r.parity.tolerance:.2e}, top-1 agreement "
                              f"{r.parity.top1_agreement:.4f} on {r.parity.images} images")
    if r.ep_parity is not None:
        t.add_row(f"parity ({r.ep_parity.ep_used})", f"max |diff| {r.ep_parity.max_abs_diff:.2e} <= "
                  f"{r.ep_parity.tolerance:.2e}, top-1 agreement {r.ep_parity.top1_agreement:.4f}")
    t.add_row("FLOPs / params", f"{human(r.flops)} MACs / {human(r.params)}")
    if r.flops_budget is not None:
        ok = r.flops <= r.flops_budget
        t.add_row("FLOPs budget", f"{human(r.flops_budget)} {'[green]within[/]' if ok else '[red]OVER[/]'}")
    t.add_row("ONNX", f"opset {r.opset}, {'dynamic' if r.dynamic_batch else 'fixed (1)'} batch")
    lat = r.latency or {}
    ep = lat.get("ep_used", "-") + (" (FALLBACK from " + lat["ep"] + ")" if lat.get("fallback") else "")
    t.add_row("predicted latency", _fmt_ms(r.predicted_latency_ms))
    mp = ((r.card or {}).get("search") or {}).get("measured_pick")
    if mp:
        t.add_row("measured pick", f"{len(mp['measured'])} candidate(s) timed before training: {mp['reason']}")
    measured = _fmt_ms(r.measured_latency_ms)
    if lat:
        measured += (f"  (p10 {lat['p10_ms']:.3f} .. p90 {lat['p90_ms']:.3f}, {lat['runs']} runs, {ep})"
                     + contention_note(lat.get("steal_share")))
    t.add_row("measured latency", measured)
    verdict = {True: "[green]within budget[/]", False: "[red]OVER budget[/]", None: ""}[r.within_budget]
    t.add_row("latency budget", f"{_fmt_ms(r.latency_budget_ms)} {verdict}")
    t.add_row("model card", r.card_path)
    t.add_row("time", f"{r.wall_time_s:.1f} s")
    Console().print(t)


@click.command("evaluate")
@click.argument("model", type=click.Path())
@click.option("--dataset", help="Dataset spec (default: the one in the model's metadata).")
@click.option("--ep", type=click.Choice(list(EPS)), default="cpu", show_default=True)
@click.option("--allow-fallback", is_flag=True, help="Run on the CPU if the GPU provider cannot load.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Batch for a dynamic-batch model.")
@click.option("--resolution", type=int, help="Input resolution (default: from the metadata or input shape).")
@click.option("--limit", type=int, help="Use only this many images of the dataset.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed latency runs.")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--predictor", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Scale the latency by this predictor's canary reference (when this machine measured its data).")
@json_option
def evaluate(model, dataset, ep, allow_fallback, threads, batch_size, resolution, limit, runs, no_latency, predictor,
             as_json):
    """Accuracy and latency of an exported ONNX MODEL on a dataset's validation split.

    The latency is timed against the canary of the model's space, as 'hwnas profile' times
    archs, so it compares with a predictor's numbers."""
    from hwnas.evaluate import evaluate_onnx

    fp = None
    if predictor is not None:
        from hwnas.predictors import load_predictor

        fp = load_predictor(predictor, force=True).fingerprint
    res = evaluate_onnx(model, dataset, ep=ep, allow_fallback=allow_fallback, threads=threads,
                        batch_size=batch_size, resolution=resolution, limit=limit,
                        measure_latency=not no_latency, latency_runs=runs, predictor_fp=fp)
    if as_json:
        return echo_json(res)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hwnas evaluate: {res['path']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    if res.get("arch"):
        t.add_row("architecture", f"{res['space']}: {res['arch']} @ {res['resolution']}px")
    t.add_row("dataset", f"{res['dataset']}: {res['images']} validation images, {res['num_classes']} classes")
    card = "" if res["card_accuracy"] is None else f"  (model card: {res['card_accuracy']:.4f})"
    t.add_row("accuracy (top-1)", f"{res['accuracy']:.4f}{card}")
    t.add_row("loss", f"{res['loss']:.4f}")
    lat = res.get("latency")
    if lat:
        fb = f" (FALLBACK from {lat['ep']})" if lat["fallback"] else ""
        t.add_row("latency", f"{lat['median_ms']:.3f} ms median, p10 {lat['p10_ms']:.3f} .. p90 {lat['p90_ms']:.3f} "
                             f"({lat['runs']} runs, batch {lat['batch_size']}, {lat['ep_used']}{fb})")
    Console().print(t)
