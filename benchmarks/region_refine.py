"""Does ``hwnas search --refine N`` make the final arch's predicted latency hold when measured?

``search_bench.py`` found its final archs measured within +-10% of their prediction for only
20/25 runs, and ``search_retime.py`` / ``search_pick_predictors.py`` showed why: the
predictor errs more on the archs a search picks than on random ones.  ``--refine`` measures
the region near the budget before the final pick and adapts the predictor there
(``hwnas.search.refine``).  This script re-runs chosen runs of a ``search_bench.py`` result
with their own ``config.json`` (same seed, data, predictor and budget) plus ``--refine N``,
then times, interleaved in one process with the benchmark's protocol (the predictor's canary
and reference, 3 paired sessions), both the refined final and the final the base predictor
would have picked, and compares each with its prediction.

``--predictor P`` swaps the runs' predictor for another one (fitted on more archs of the
same device, or another model: does a better base predictor, with or without ``--refine``,
make the picks hold?); ``--seeds`` repeats each chosen label's config at other seeds too.

    .venv/bin/python benchmarks/region_refine.py --run benchmarks/results/search_m1.json \\
        --labels fpnas,parsec@K0 --refine 16 --out benchmarks/results/region_refine_m1.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def _within(xs, tol):
    return sum(abs(x - 1) <= tol for x in xs) / len(xs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a search_bench.py results .json")
    ap.add_argument("--labels", default="fpnas,parsec@K0", help="which of its runs to repeat with --refine")
    ap.add_argument("--refine", type=int, default=16)
    ap.add_argument("--predictor", type=Path, default=None,
                    help="search with this predictor instead of the runs' own (same device, same space)")
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds to run each chosen label at (default: the benchmark's own runs)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)

    from hwnas.predictors import load_predictor
    from hwnas.profiling.fingerprint import device_fingerprint, device_name
    from hwnas.profiling.protocol import DataTimer
    from hwnas.search import SearchConfig, run_search
    from search_bench import bench_space

    bench = json.loads(a.run.read_text())
    labels = a.labels.split(",")
    chosen = [r for r in bench["runs"] if r["label"] in labels]
    if not chosen:
        raise SystemExit(f"error: no run labelled {a.labels!r} in {a.run}; its labels: "
                         f"{', '.join(sorted({r['label'] for r in bench['runs']}))}")
    if a.seeds is not None:  # each label's first run as the template, at every seed asked for
        first = {r["label"]: r for r in reversed(chosen)}
        chosen = [first[lab] if first[lab]["seed"] == int(sd) else dict(first[lab], seed=int(sd), arch=None)
                  for sd in a.seeds.split(",") for lab in labels if lab in first]
    space = bench_space(bench["args"].get("space", "tiny"))  # registered before the searches resolve it
    work = Path(tempfile.mkdtemp(prefix="hwnas_region_refine_"))
    t0 = time.time()
    rows = []
    for r in chosen:
        cfg = json.loads((Path(r["out"]) / "config.json").read_text())
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}  # JSON lists were tuples
        cfg.update(out=str(work / f"{r['label']}_{r['seed']}"), refine=a.refine, resume=False, seed=r["seed"])
        if a.predictor is not None:
            cfg["predictor"] = str(a.predictor)
        res = run_search(SearchConfig(**cfg))
        f = res.refine
        own = a.predictor is None and r["arch"] is not None  # the benchmark's own run, repeated as it was
        rows.append({"label": r["label"], "seed": r["seed"], "bench_final": r["arch"] if own else None,
                     "bench_pred": r["predicted_latency_ms"] if own else None,
                     "bench_measured": r["measured_ms"] if own else None, "base_final": f["base_final"], "base_pred": f["base_final_ms"],
                     "final": res.arch, "pred": res.predicted_latency_ms, "final_in_fit": f["final_in_fit"],
                     "loo_mape": f["loo"]["mape"], "n_measured": len(f["measured"]), "budget": res.latency_budget_ms,
                     "search_s": res.wall_time_s})
        print(f"{r['label']} seed {r['seed']}: base {f['base_final']} -> {res.arch}", flush=True)
    search_s = time.time() - t0

    fp = load_predictor(a.predictor or chosen[0]["predictor"], space=space, force=True).fingerprint
    timer = DataTimer(space, fp, space.default_resolution)
    cache = {}

    def now(arch):
        if arch not in cache:
            cache[arch] = timer.measure(arch, sessions=3).latency_ms
        return cache[arch]

    for row in rows:  # one arch after the other, run by run: refined and base finals share the moments
        row["measured"], row["base_measured"] = now(row["final"]), now(row["base_final"])
    ref_ratio = [r["measured"] / r["pred"] for r in rows]
    base_ratio = [r["base_measured"] / r["base_pred"] for r in rows]
    out_of_fit = [r["measured"] / r["pred"] for r in rows if not r["final_in_fit"]]
    own = [r for r in rows if r["bench_final"] is not None]
    same = sum(r["base_final"] == r["bench_final"] for r in own)
    host = device_name(device_fingerprint("cpu", threads=1, batch_size=1))
    rep = {"host": host, "run": str(a.run), "refine": a.refine, "labels": labels, "rows": rows, "search_s": search_s,
           "wall_s": time.time() - t0, "refined_within_10": _within(ref_ratio, .10),
           "base_within_10": _within(base_ratio, .10), "reproduced_base_final": same}
    L = [f"# `hwnas search --refine`: does the final arch's prediction hold when measured? ({space.name})", "",
         f"{time.strftime('%Y-%m-%d %H:%M')}, `{host}`, `benchmarks/region_refine.py --run {a.run} --labels "
         f"{a.labels} --refine {a.refine}`, {rep['wall_s'] / 60:.1f} min. Each run repeats a `search_bench.py` run "
         "(its config.json: seed, data, predictor, budget) with `--refine`; then, in one process, the refined final "
         "and the final the base predictor picks are each timed with 3 paired sessions against the predictor's "
         "canary on its reference (the benchmark's protocol).", "",
         f"The repeated searches picked the benchmark's own final (by the base predictor) in {same}/{len(own)} of its runs repeated as they were"
         + (f" (runs searched with `--predictor {a.predictor}`)" if a.predictor else "") + ".", "",
         "| final | predicted by | median measured / predicted | within +-5% | within +-10% | over budget (measured) |",
         "|---|---|---:|---:|---:|---:|",
         f"| the base predictor's pick | base predictor | {statistics.median(base_ratio):.3f} | "
         f"{_within(base_ratio, .05):.0%} | {_within(base_ratio, .10):.0%} | "
         f"{sum(r['base_measured'] > r['budget'] for r in rows)}/{len(rows)} |",
         f"| the refined pick | adapted predictor | {statistics.median(ref_ratio):.3f} | {_within(ref_ratio, .05):.0%} | "
         f"{_within(ref_ratio, .10):.0%} | {sum(r['measured'] > r['budget'] for r in rows)}/{len(rows)} |"]
    if out_of_fit:
        L.append(f"| the refined pick, not among the measured | adapted predictor | {statistics.median(out_of_fit):.3f} | "
                 f"{_within(out_of_fit, .05):.0%} | {_within(out_of_fit, .10):.0%} | - |")
    L += ["", f"{sum(r['final_in_fit'] for r in rows)}/{len(rows)} refined picks were among the measured archs "
          "(for those, the prediction is in-sample). The adapted predictor's leave-one-out MAPE over the measured region: "
          f"median {100 * statistics.median(r['loo_mape'] for r in rows):.1f}%.", "",
          "| run | seed | base pick: predicted / measured ms | refined pick | predicted / measured ms | in fit | LOO MAPE |",
          "|---|---:|---:|---|---:|---|---:|"]
    L += [f"| {r['label']} | {r['seed']} | {r['base_pred']:.4f} / {r['base_measured']:.4f} | "
          f"{'same' if r['final'] == r['base_final'] else r['final']} | {r['pred']:.4f} / {r['measured']:.4f} | "
          f"{'yes' if r['final_in_fit'] else 'no'} | {100 * r['loo_mape']:.1f}% |" for r in rows]
    a.out.write_text("\n".join(L) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(rep, indent=1))
    print("\n".join(L))


if __name__ == "__main__":
    main()
