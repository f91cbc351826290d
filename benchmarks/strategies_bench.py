"""Every registered search strategy on one task, side by side: the comparison this toolkit exists for.

tiny space, digits, one predicted-latency budget, the same seeds, data, epochs and supernet
settings for every strategy; each strategy runs as its paper does where hwnas has the pieces
(the strategy's own preset, plus ``PRESETS``: SPOS-style evolution on a uniformly trained,
frozen supernet), else with the loop's defaults.  The list of strategies is the registry's
(``list_strategies()``), so a new method joins the table without editing this file.

Per run: archs evaluated, supernet training cost (the search's wall time: every strategy
trains the same epochs and batches; they differ in the paths trained and scored per batch),
the final arch trained stand-alone from scratch and scored on a held-out **test** split (25%
of digits, one fixed split) that no reward and no training step sees, its predicted latency
and its latency measured with the canary protocol of the predictor's data, against the
budget.  Each paper's headline claim is printed beside what we measured at our scale
(``CLAIMS``); our scale is tiny, so a claim "not reproduced" here says little about the
paper, and one "reproduced" says only that the mechanism shows at this size.

    .venv/bin/python benchmarks/strategies_bench.py                    # every strategy, 5 seeds
    .venv/bin/python benchmarks/strategies_bench.py --seeds 1 --epochs 3 --limit 300   # smoke

Writes benchmarks/results/strategies.json (every run), strategies.md and strategies.png
(stand-alone test accuracy against search wall time, one point per strategy, std bars).
Run it on an otherwise idle machine: wall times are compared as ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_bench import mean_std, measured_ms, train_standalone  # noqa: E402

# SearchConfig settings a method's paper implies beyond the strategy's own preset
# (``Strategy.preset``: GreedyNAS's sampler and search stage, ...); evolution alone runs
# coupled by default, so it gets SPOS's procedure here: uniform training, then 20 generations
PRESETS = {
    "evolution": {"train_sampler": "uniform", "search_stage_steps": 20},
    # DA-NAS-style needs a class curriculum: digits' 10 classes in three stages
    "danas": {"class_schedule": (3, 6, 10)},
}

# strategy -> the headline claim of its paper (the table puts what we measured beside it)
CLAIMS = {
    "fpnas": "FP-NAS (Yan et al. 2021): 2.1x faster search than PARSEC, 64% fewer archs sampled, equal accuracy",
    "parsec": "PARSEC (Casale et al. 2019): a learned distribution beats random sampling at equal cost",
    "ddpnas": "DDPNAS (Zheng et al. 2019): one arch after a fixed number of pruning steps, SOTA accuracy, fast",
    "mdenas": "MdeNAS (Zheng et al. 2019): 6x faster search than DARTS-style methods; ranking hypothesis",
    "evolution": "SPOS (Guo et al. 2020): uniform single-path training + evolution matches coupled searches",
    "greedynas": "GreedyNAS (You et al. 2020): better top-1 at the same FLOPs with 60% of the supernet training cost",
    "random": "random search: the baseline every NAS paper must beat",
    "bnnas": "BN-NAS (Chen et al. 2021): > 10x faster supernet training (only BN trains), no accuracy loss",
    "attentivenas": "AttentiveNAS (Wang et al. 2021): a better accuracy-FLOPs front than uniform sandwich sampling",
    "dmasking": "FBNetV2 DMaskingNAS (Wan et al. 2020): up to 421x less search cost, cost nearly constant as the "
                "space grows",
    "danas": "DA-NAS (Dai et al. 2020): 2x faster than previous methods at state-of-the-art accuracy",
    "pinas": "Pi-NAS (Peng et al. 2021): unsupervised search that transfers better (here a supervised adaptation)",
}


def fit_here(space, work: Path, num_archs: int, seed: int = 0):
    """Profile ``num_archs`` archs on *this* machine (the paired canary protocol, as ``hwnas
    profile``) and fit the MLP on them: data measured in an earlier session describe another
    host (their archs' relative speeds differ), so the budget, the predictions and the final
    measurements all come from this machine.  -> (predictor, held-out metrics, latencies)."""
    from hwnas.predictors import create_predictor, load_store_data, regression_metrics, split_rows
    from hwnas.profiling.campaign import CampaignConfig, run_campaign
    from hwnas.profiling.store import LatencyStore

    db = work / "latency.db"
    with LatencyStore(db) as store:
        run_campaign(store, CampaignConfig(space=space.name, num_archs=num_archs, seed=seed))
    d = load_store_data(db, space)
    archs = [space.parse(a) for a in d.archs]
    tr, te = split_rows(len(archs), 0.2, seed)
    p = create_predictor("mlp", space=space, seed=seed).fit([archs[i] for i in tr], d.latency_ms[tr])
    metrics = regression_metrics(d.latency_ms[te], p.predict([archs[i] for i in te]))
    p = create_predictor("mlp", space=space, seed=seed).fit(archs, d.latency_ms)  # final: all rows
    p.fingerprint, p.device_id = d.fingerprint, d.device_id  # this machine and its canary reference
    p.save(work / "predictor.hwp")
    return p, metrics, d.latency_ms


def run_one(strategy, seed, args, budget, pred_path, work, space, data, predictor):
    """One search, its stand-alone retraining and latency measurement -> a row (or an error row)."""
    from hwnas.errors import HwnasError
    from hwnas.search import SearchConfig, run_search

    from hwnas.search.base import strategy_class

    preset = PRESETS.get(strategy, {})
    # a gradient penalty (logcost) needs a distribution learnt by gradient; the rest get hinge-shaped rewards;
    # a relaxed search (dmasking) scores no samples: its budget enters as the expected-cost penalty
    cls = strategy_class(strategy)
    penalty = "differentiable" if cls.relaxed else args.penalty if cls.differentiable else "hinge"
    settings = dict(space="tiny", strategy=strategy, dataset="digits", epochs=args.epochs, warmup_epochs=args.warmup,
                    seed=seed, latency_budget_ms=budget, predictor=str(pred_path), penalty=penalty,
                    batch_size=args.batch, val_batch_size=args.batch, limit=args.limit,
                    test_fraction=args.test_fraction, threads=args.threads, out=str(work / f"{strategy}_{seed}"))
    settings.update(preset)
    t = time.perf_counter()
    try:
        res = run_search(SearchConfig(**settings))
    except HwnasError as e:  # a strategy that cannot run this task is a row that says why
        return {"strategy": strategy, "seed": seed, "error": f"{type(e).__name__}: {e}", "preset": preset}
    arch = space.parse(res.arch)
    val_acc, test_acc = train_standalone(space, arch, data, args.epochs, args.batch, seed)
    meas_all = [measured_ms(space, arch, args.repeats, predictor.fingerprint) for _ in range(args.measurements)]
    meas = statistics.median(meas_all)
    saved = json.loads((Path(settings["out"]) / "config.json").read_text())  # presets resolved
    row = dict(res.to_dict(), preset=preset, procedure={k: saved.get(k) for k in (
               "train_sampler", "search_stage_steps", "penalty", "train_sampler_params", "strategy_params")}, standalone_val_acc=val_acc, test_acc=test_acc, measured_ms=meas,
               measured_all_ms=meas_all, budget_ms=budget, within_budget_pred=res.predicted_latency_ms <= budget,
               within_budget_measured=meas <= budget, measured_vs_pred=meas / res.predicted_latency_ms - 1.0,
               load_avg=os.getloadavg()[0], run_s=time.perf_counter() - t)
    print(f"seed {seed} {strategy:11s} archs {res.archs_sampled:4d} wall {res.wall_time_s:6.1f}s "
          f"test {test_acc:.3f} pred {res.predicted_latency_ms:.4f} meas {meas:.4f} budget {budget:.4f} {res.arch}",
          flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--limit", type=int, default=500, help="digits images used (train + val)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--test-fraction", type=float, default=0.25, help="held-out test share of digits")
    ap.add_argument("--budget-quantile", type=float, default=0.4,
                    help="latency budget = this quantile of the measured latencies the predictor learnt")
    ap.add_argument("--penalty", default="logcost", help="budget penalty of the distribution strategies")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="sessions per latency measurement")
    ap.add_argument("--measurements", type=int, default=3, help="latency measurements of each final arch (median)")
    ap.add_argument("--profile-archs", type=int, default=200, help="archs profiled here for the predictor")
    ap.add_argument("--strategies", default=None, help="comma-separated subset (default: every registered one)")
    ap.add_argument("--out", default=str(RESULTS / "strategies"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the .json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        saved = json.loads(out.with_suffix(".json").read_text())
        runs = saved["runs"]
        write_md(out.with_suffix(".md"), argparse.Namespace(**saved["args"]), saved["strategies"],
                 saved["predictor_metrics"], saved["budget_ms"], runs,
                 saved.get("total_s") or sum(r.get("run_s", 0.0) for r in runs))
        return plot(out.with_suffix(".png"), saved["strategies"], runs, saved["budget_ms"])

    import torch

    torch.set_num_threads(args.threads)
    from hwnas.data import load_dataset
    from hwnas.search import list_strategies
    from hwnas.space import get_space

    names = list_strategies() if args.strategies is None else args.strategies.split(",")
    space = get_space("tiny")
    work = Path(tempfile.mkdtemp(prefix="hwnas_strategies_bench_"))
    pred_path = work / "predictor.hwp"
    t0 = time.perf_counter()
    predictor, pmetrics, lat = fit_here(space, work, args.profile_archs)
    budget = float(np.quantile(lat, args.budget_quantile))
    print(f"strategies: {names}; predictor {pmetrics}; budget {budget:.4f} ms", flush=True)
    data = load_dataset("digits", 32, seed=0, limit=args.limit, test_fraction=args.test_fraction)
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):  # interleaved per seed: a slow phase of the machine hits every strategy
        for name in names:
            rows.append(run_one(name, seed, args, budget, pred_path, work, space, data, predictor))
            out.with_suffix(".json").write_text(json.dumps(
                {"args": vars(args), "strategies": names, "predictor_metrics": pmetrics, "budget_ms": budget,
                 "presets": PRESETS, "runs": rows}, indent=2, default=float))
    total = time.perf_counter() - t0
    saved = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".json").write_text(json.dumps(dict(saved, total_s=total), indent=2, default=float))
    write_md(out.with_suffix(".md"), args, names, pmetrics, budget, rows, total)
    plot(out.with_suffix(".png"), names, rows, budget)


def _groups(names, rows):
    return {n: [r for r in rows if r["strategy"] == n and "error" not in r] for n in names}


def write_md(path, args, names, pmetrics, budget, rows, total_s):
    groups = _groups(names, rows)
    ok = [r for r in rows if "error" not in r]
    load = [r["load_avg"] for r in ok] or [0.0]
    lines = [
        "# Every search strategy on one task (tiny, digits, one latency budget)",
        "",
        f"Generated by `benchmarks/strategies_bench.py` ({len(rows)} runs, {total_s / 60:.1f} min) on a shared "
        f"2-vCPU VM (CPU only, torch {args.threads} thread; load average {min(load):.1f}-{max(load):.1f}, about 1 "
        "of it this benchmark). Runs are interleaved per seed, so wall times are comparable as ratios.",
        "",
        f"Settings, the same for every strategy: seeds 0..{args.seeds - 1}; {args.epochs} epochs ({args.warmup} "
        f"warm-up); digits, {args.limit} images for train + val, plus a fixed held-out **test** split of "
        f"{args.test_fraction:.0%} that no reward or training step sees; batch {args.batch}; budget {budget:.4f} ms "
        f"predicted latency (the {args.budget_quantile:.0%} quantile of the predictor's data), `--penalty "
        f"{args.penalty}` for the strategies whose distribution learns by gradient, hinge-shaped rewards for the rest. Per-strategy settings (the paper's procedure where "
        f"hwnas has it): {json.dumps(PRESETS)}. The final arch is trained from scratch for {args.epochs} epochs "
        "and scored on the test split; its latency is measured with the predictor data's canary protocol, "
        f"{args.repeats} sessions, median of {args.measurements} measurements.",
        "",
        f"Predictor: MLP on {args.profile_archs} archs profiled on this machine at the start of the run (paired "
        "canary protocol); held-out (20%): " + ", ".join(f"{k} {v:.3g}" for k, v in pmetrics.items()) + ".",
        "",
        "## Per strategy (mean ± std over seeds)",
        "",
        "| strategy | supernet trained by / search stage | runs | archs evaluated | search wall time (s) | "
        "supernet val acc | stand-alone **test** acc | predicted ms | measured ms | within budget (pred / measured) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        rs = groups[n]
        failed = [r for r in rows if r["strategy"] == n and "error" in r]
        if not rs:
            lines.append(f"| {n} | - | 0 | failed: {failed[0]['error'][:120] if failed else '-'} ||||||| ")
            continue
        proc = rs[0]["procedure"]
        how = f"{proc['train_sampler']} / " + (f"{proc['search_stage_steps']} steps" if proc["search_stage_steps"]
                                                else "coupled")
        lines.append(
            f"| {n} | {how} | {len(rs)} | {mean_std([r['archs_sampled'] for r in rs])} | "
            f"{mean_std([r['wall_time_s'] for r in rs])} | "
            f"{mean_std([r['supernet_val_acc'] for r in rs])} | {mean_std([r['test_acc'] for r in rs])} | "
            f"{mean_std([r['predicted_latency_ms'] for r in rs])} | {mean_std([r['measured_ms'] for r in rs])} | "
            f"{sum(r['within_budget_pred'] for r in rs)} / {sum(r['within_budget_measured'] for r in rs)} of "
            f"{len(rs)} |")
    lines += ["", "## Each paper's claim beside what we measured", "",
              "| strategy | the paper's headline | measured here |", "|---|---|---|"]
    ref = groups.get("fpnas") or groups.get("random") or []
    for n in names:
        rs = groups[n]
        if not rs:
            continue
        bits = [f"test acc {mean_std([r['test_acc'] for r in rs])}"]
        if ref and n != ("fpnas" if groups.get("fpnas") else "random"):
            rname = "FP-NAS" if groups.get("fpnas") else "random"
            wall = statistics.mean(r["wall_time_s"] for r in rs) / statistics.mean(r["wall_time_s"] for r in ref)
            archs = statistics.mean(r["archs_sampled"] for r in rs) / statistics.mean(r["archs_sampled"] for r in ref)
            dacc = statistics.mean(r["test_acc"] for r in rs) - statistics.mean(r["test_acc"] for r in ref)
            bits.append(f"{wall:.2f}x {rname}'s wall time, {archs:.2f}x its archs evaluated, test acc {dacc:+.3f}")
        ent = [r["entropy"] for r in rs if r.get("entropy") is not None]
        if ent:
            bits.append(f"final entropy {mean_std(ent)}")
        lines.append(f"| {n} | {CLAIMS.get(n, '-')} | {'; '.join(bits)} |")
    near = sum(abs(r["measured_vs_pred"]) <= 0.10 for r in ok)
    lines += [
        "",
        f"Measured latency within ±10% of predicted: {near}/{len(ok)} final archs.",
        "",
        "![test accuracy against search wall time](strategies.png)",
        "",
        "## Every run",
        "",
        "| seed | strategy | arch | archs | wall s | supernet acc | test acc | pred ms | meas ms | how |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['seed']} | {r['strategy']} | failed: {r['error'][:160]} ||||||||")
            continue
        lines.append(f"| {r['seed']} | {r['strategy']} | `{r['arch']}` | {r['archs_sampled']} | {r['wall_time_s']:.1f} | "
                     f"{r['supernet_val_acc']:.3f} | {r['test_acc']:.3f} | {r['predicted_latency_ms']:.4f} | "
                     f"{r['measured_ms']:.4f} | {r['final_choice']} |")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def plot(path, names, rows, budget):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, rs in _groups(names, rows).items():
        if not rs:
            continue
        w = [r["wall_time_s"] for r in rs]
        a = [r["test_acc"] for r in rs]
        ax.errorbar(statistics.mean(w), statistics.mean(a), xerr=statistics.stdev(w) if len(w) > 1 else 0,
                    yerr=statistics.stdev(a) if len(a) > 1 else 0, fmt="o", capsize=3, label=n)
        ax.annotate(n, (statistics.mean(w), statistics.mean(a)), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("search wall time (s)")
    ax.set_ylabel("stand-alone test accuracy")
    ax.set_title(f"tiny / digits, latency budget {budget:.3f} ms (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
