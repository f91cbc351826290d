"""Where does the paired ratio's remaining noise come from: within a session, or between sessions?

20 random tiny archs, each timed against the canary in 4 fresh paired sessions of 50 pairs
(round-robin over the archs) and once with 200 pairs.  If a 50-pair session agrees with the
200-pair one, the estimator is not the limit; if sessions disagree with each other, more
sessions per arch (``--repeats``) would help.  Run it on an otherwise idle machine.

    .venv/bin/python benchmarks/canary_sessions.py [--out benchmarks/results/canary_sessions.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np

from hwnas.profiling.canary import build_canary
from hwnas.profiling.fingerprint import cpu_model
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.paired import PairedTimer
from hwnas.space import get_space


def _within(a, b, tol):
    return float(np.mean(np.abs(np.asarray(a) / np.asarray(b) - 1) <= tol))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/canary_sessions.md"))
    a = ap.parse_args(argv)
    space, canary = get_space(a.space), build_canary(a.space)
    timer = PairedTimer(canary.onnx)
    rng = np.random.default_rng(5)
    data = [arch_to_onnx(space, space.sample(rng)).SerializeToString() for _ in range(a.n)]
    load0 = os.getloadavg()
    r50 = np.array([[timer.measure(d, runs=50).ratio for d in data] for _ in range(4)]).T  # arch x session
    r200 = np.array([timer.measure(d, runs=200).ratio for d in data])
    between = np.std(np.log(r50), axis=1, ddof=1)
    rows = [("one 50-pair session vs one 200-pair session", r50[:, 0], r200),
            ("median of 4 x 50 pairs vs one 200-pair session", np.median(r50, 1), r200),
            ("session 2 vs session 1 (50 pairs each)", r50[:, 1], r50[:, 0]),
            ("median of sessions 3-4 vs median of sessions 1-2", np.median(r50[:, 2:], 1), np.median(r50[:, :2], 1))]
    out = {"date": datetime.date.today().isoformat(), "cpu_model": cpu_model(), "space": a.space,
           "canary": canary.arch, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
           "between_session_sd_log_ratio": {"median": float(np.median(between)), "max": float(between.max())},
           "rows": [{"what": w, "within_5": _within(x, y, 0.05), "within_10": _within(x, y, 0.10)} for w, x, y in rows]}
    L = ["# Paired ratio: within-session vs between-session noise", "",
         f"{out['date']}, `{out['cpu_model']}`, {a.n} random {a.space} archs against canary `{canary.arch}`, "
         f"load average {load0[0]:.2f} -> {out['loadavg_end'][0]:.2f}, back to back (minutes, not hours). "
         "Produced by `benchmarks/canary_sessions.py`.", "",
         f"Between-session standard deviation of log(ratio), 50 pairs: median {np.median(between):.3f}, "
         f"max {between.max():.3f}.", "", "| comparison | within +-5% | within +-10% |", "|---|---:|---:|"]
    L += [f"| {r['what']} | {100 * r['within_5']:.0f}% | {100 * r['within_10']:.0f}% |" for r in out["rows"]]
    a.out.write_text("\n".join(L) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print("\n".join(L))


if __name__ == "__main__":
    main()
