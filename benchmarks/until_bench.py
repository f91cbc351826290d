"""``hwnas profile --until``: one real run, its learning curve, forecast and stopping point.

    .venv/bin/python benchmarks/until_bench.py [--target within10=0.95] [--round 50] [--model xgb]

Profiles ``tiny`` on this machine into a fresh store (``benchmarks/work/until.db``) in rounds of
``--round`` new archs until the ``--model`` predictor's 5-fold cross-validated metric meets the
target, the learning curve says it cannot, or ``--max-archs``; writes
``benchmarks/results/until.{md,json}`` from the command's own ``--json`` report.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="within10=0.95")
    ap.add_argument("--round", type=int, default=50)
    ap.add_argument("--model", default="xgb")
    ap.add_argument("--max-archs", type=int, default=1500)
    ap.add_argument("--db", default=str(ROOT / "benchmarks" / "work" / "until.db"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "until.md"))
    args = ap.parse_args()
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    cmd = [str(ROOT / ".venv" / "bin" / "hwnas"), "profile", "--space", "tiny", "-n", str(args.round), "--db", str(db),
           "--until", args.target, "--until-model", args.model, "--max-archs", str(args.max_archs), "--json"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"hwnas profile failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rep = json.loads(proc.stdout)
    u = rep["until"]
    Path(args.out).with_suffix(".json").write_text(json.dumps({"command": cmd[1:], "wall_s": wall, **rep}, indent=1))
    lines = ["# `hwnas profile --until`: a real run", "",
             f"`hwnas {' '.join(cmd[1:]).replace(str(ROOT) + '/', '')}` on this session's 2-vCPU host "
             f"({wall:.0f} s wall).", "",
             f"Target {u['metric']} {'<=' if u['metric'] == 'mape' else '>='} {u['target']} with `{u['model']}`, "
             f"{u.get('folds', 5)}-fold cross-validation on everything stored after each round.", "",
             "| round | archs | new | CV value |", "|---|---:|---:|---:|"]
    for i, r in enumerate(u["rounds"], 1):
        v = "-" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"| {i} | {r['n']} | {r.get('new', '-')} | {v} |")
    f = u.get("forecast")
    lines += ["", f"Stopped: **{u['stopped']}** ({u.get('message', '')})."]
    if f:
        lines.append(f"Last forecast: error(n) = {f['a']:.3g} n^-{f['b']:.3g} + {f['c']:.3g}; archs needed: "
                     f"{f['needed']}.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
