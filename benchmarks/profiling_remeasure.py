"""Does re-measuring a shipped latency dataset give back its numbers?

Why: a latency predictor cannot be more accurate than the data's own repeatability, so
the share of archs whose re-measured latency is within +-10% of the stored one (and the
Kendall tau between the two) is the ceiling any predictor's ``within_10`` is judged
against.  Picks ``--n`` random archs of each CSV and measures them again with the real
campaign code path (``measure_chunk``: chunks, rounds, lowest session median), with the
protocol given for that CSV (``--csv FILE:REPEATS``).  Several CSVs are measured
interleaved, chunk by chunk, so they see the same machine phases.

    .venv/bin/python benchmarks/profiling_remeasure.py --csv data/latency/tiny_cpu.csv:3 \
        [--csv old.csv:1] [--n 40] [--out benchmarks/results/profiling_remeasure.md]
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from hwnas.profiling.campaign import DEFAULT_CHUNK, CampaignConfig, measure_chunk
from hwnas.profiling.fingerprint import cpu_model


def _read(path: str) -> tuple[str, dict[str, float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[0]["space"], {r["arch"]: float(r["latency_ms"]) for r in rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", action="append", required=True, metavar="FILE:REPEATS")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profiling_remeasure.md"))
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    jobs = []
    for spec in a.csv:
        path, _, r = spec.rpartition(":")
        space, stored = _read(path)
        archs = [str(x) for x in rng.choice(sorted(stored), size=min(a.n, len(stored)), replace=False)]
        jobs.append({"csv": path, "repeats": int(r), "space": space, "archs": archs, "stored": stored, "new": {}})
    load0, t0 = os.getloadavg(), time.time()
    for i in range(0, a.n, a.chunk):
        for job in jobs:
            cfg = CampaignConfig(space=job["space"], num_archs=0, repeats=job["repeats"], chunk=a.chunk)
            measure_chunk(job["space"], job["archs"][i:i + a.chunk], cfg,
                          lambda row, job=job: job["new"].__setitem__(row["arch"], row.get("median_ms")))
    out = {"date": datetime.date.today().isoformat(), "cpu_model": cpu_model(), "loadavg_start": load0,
           "loadavg_end": os.getloadavg(), "wall_s": time.time() - t0, "results": []}
    for job in jobs:
        old = np.array([job["stored"][x] for x in job["archs"]])
        new = np.array([job["new"][x] for x in job["archs"]])
        rel = np.abs(new - old) / old
        out["results"].append({
            "csv": job["csv"], "space": job["space"], "repeats": job["repeats"], "archs": len(old),
            "within_10": float(np.mean(rel <= 0.10)), "within_5": float(np.mean(rel <= 0.05)),
            "median_abs_rel_diff": float(np.median(rel)), "median_new_over_stored": float(np.median(new / old)),
            "kendall_tau": float(kendalltau(old, new)[0]), "pairs_ms": list(zip(old.tolist(), new.tolist()))})
    lines = ["# Re-measuring shipped latency datasets", "",
             f"{out['date']}, CPU `{out['cpu_model']}`, load average {load0[0]:.2f} at start, "
             f"{out['loadavg_end'][0]:.2f} at end; {a.n} random archs per dataset (seed {a.seed}), measured again "
             f"with the real campaign code (chunks of {a.chunk}, rounds, lowest session median) and the dataset's own "
             "protocol, datasets interleaved chunk by chunk. Produced by `benchmarks/profiling_remeasure.py`.", "",
             "| dataset | protocol | archs | within +-10% | within +-5% | median abs diff | median new/stored "
             "| Kendall tau |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in out["results"]:
        lines.append(f"| `{r['csv']}` | R={r['repeats']} | {r['archs']} | {100 * r['within_10']:.0f}% "
                     f"| {100 * r['within_5']:.0f}% | {100 * r['median_abs_rel_diff']:.1f}% "
                     f"| {r['median_new_over_stored']:.3f} | {r['kendall_tau']:.3f} |")
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
