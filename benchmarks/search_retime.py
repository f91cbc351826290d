"""Why do a search benchmark's final archs measure above their predictions?  Re-time them.

``search_bench.py`` measures each final arch right after its search, in the process that
trained the supernet, minutes after the predictor's data were profiled.  When those
measurements sit systematically above the predictions, three explanations differ in what a
re-timing in a fresh process shows:

- the predictor errs on the archs a search picks (the winner's curse): the final archs
  re-time as they measured, and the predictor's own training archs re-time as stored;
- the machine drifted in a way the canary does not cancel: both the final archs *and* the
  stored training archs re-time away from their earlier numbers, by a shared factor;
- the measuring process's state (after torch training in it): the final archs re-time
  closer to their predictions here than in the benchmark's process.

This script times, interleaved in one fresh process with the benchmark's protocol
(``measure_like_data``: the data's canary and reference, 3 paired sessions), every final arch
of a ``search_bench.py`` run and ``--stored`` archs drawn from the predictor's training rows,
and writes a small report.

    .venv/bin/python benchmarks/search_retime.py --run benchmarks/results/search_m1.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a search_bench.py results .json")
    ap.add_argument("--stored", type=int, default=40, help="training archs of the predictor re-timed beside them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: <run>_retime.md")
    a = ap.parse_args(argv)

    from hwnas.predictors import load_predictor
    from hwnas.profiling.onnx_graph import arch_to_onnx
    from hwnas.profiling.protocol import measure_like_data
    from hwnas.profiling.store import LatencyStore
    from search_bench import bench_space, predictor_file

    run = json.loads(a.run.read_text())
    work = Path(run["runs"][0]["out"]).parent
    space = bench_space(run["args"].get("space", "tiny"))
    fp = load_predictor(predictor_file(work, run["args"], space), space=space, force=True).fingerprint
    with LatencyStore(work / "latency.db") as store:
        data = store.dataset(space.name)
    stored = {str(arch): float(ms) for arch, ms in zip(data.archs, data.latency_ms)}
    rng = np.random.default_rng(a.seed)
    sample = [str(x) for x in rng.choice(sorted(stored), size=min(a.stored, len(stored)), replace=False)]
    finals = [(r["seed"], r["label"], r["arch"], r["predicted_latency_ms"], r["measured_ms"]) for r in run["runs"]]

    def now(arch):
        parsed = space.parse(arch)
        m = measure_like_data(arch_to_onnx(space, parsed).SerializeToString(), space.name, space.resolution(parsed), fp,
                              sessions=3)
        return m.latency_ms, m.speed_factor

    t0 = time.time()
    fin, sto = [], []
    for i in range(max(len(finals), len(sample))):  # interleaved: both see the same moments
        if i < len(finals):
            seed, label, arch, pred, meas = finals[i]
            ms, f = now(arch)
            fin.append({"seed": seed, "label": label, "arch": arch, "predicted_ms": pred, "bench_ms": meas,
                        "now_ms": ms, "speed_factor": f})
        if i < len(sample):
            ms, f = now(sample[i])
            sto.append({"arch": sample[i], "stored_ms": stored[sample[i]], "now_ms": ms, "speed_factor": f})

    def within(xs, tol):
        return sum(abs(x - 1) <= tol for x in xs) / len(xs)

    s_ratio = [r["now_ms"] / r["stored_ms"] for r in sto]
    f_pred = [r["now_ms"] / r["predicted_ms"] for r in fin]
    f_bench = [r["now_ms"] / r["bench_ms"] for r in fin]
    b_pred = [r["bench_ms"] / r["predicted_ms"] for r in fin]
    out = {"run": str(a.run), "device": fp.get("device_id"), "wall_s": time.time() - t0, "stored": sto, "finals": fin,
           "stored_now_over_stored_median": statistics.median(s_ratio),
           "finals_now_over_pred_median": statistics.median(f_pred),
           "finals_now_over_bench_median": statistics.median(f_bench),
           "finals_bench_over_pred_median": statistics.median(b_pred)}
    path = a.out or a.run.with_name(a.run.stem + "_retime.md")
    L = ["# Search benchmark final archs, re-timed in a fresh process", "",
         f"`benchmarks/search_retime.py --run {a.run}`, {time.strftime('%Y-%m-%d %H:%M')}, device `{fp.get('device_id')}` "
         f"(the predictor's data), {out['wall_s']:.0f} s; {len(fin)} final archs and {len(sto)} of the predictor's "
         "training archs, interleaved, each 3 paired sessions against the data's canary on its reference.", "",
         "| set | statistic | median | within +-5% | within +-10% |", "|---|---|---:|---:|---:|",
         f"| predictor's training archs | now / stored | {out['stored_now_over_stored_median']:.3f} | "
         f"{100 * within(s_ratio, .05):.0f}% | {100 * within(s_ratio, .10):.0f}% |",
         f"| final archs | benchmark's check / predicted | {out['finals_bench_over_pred_median']:.3f} | "
         f"{100 * within(b_pred, .05):.0f}% | {100 * within(b_pred, .10):.0f}% |",
         f"| final archs | now / predicted | {out['finals_now_over_pred_median']:.3f} | "
         f"{100 * within(f_pred, .05):.0f}% | {100 * within(f_pred, .10):.0f}% |",
         f"| final archs | now / benchmark's check | {out['finals_now_over_bench_median']:.3f} | "
         f"{100 * within(f_bench, .05):.0f}% | {100 * within(f_bench, .10):.0f}% |", "",
         "| seed | run | predicted ms | benchmark ms | now ms | now / predicted |", "|---:|---|---:|---:|---:|---:|"]
    L += [f"| {r['seed']} | {r['label']} | {r['predicted_ms']:.4f} | {r['bench_ms']:.4f} | {r['now_ms']:.4f} | "
          f"{r['now_ms'] / r['predicted_ms']:.3f} |" for r in fin]
    path.write_text("\n".join(L) + "\n")
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print("\n".join(L))


if __name__ == "__main__":
    main()
