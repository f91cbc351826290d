"""Supernet training throughput of the data-parallel search: 1 vs N ranks, DDP vs one flat all-reduce.

Run one configuration per launch (each prints one JSON line), e.g. on a 2-core machine:

    python benchmarks/ddp_bench.py --all            # launches every configuration below, writes the results

What it times: ``hwnas.search.loop._supernet_step`` (the search's training step: forward,
backward, gradient averaging, SGD) on ``tiny`` with digits, ``--steps`` steps after
``--warmup`` untimed ones, global batch 64, each rank training its own uniformly drawn path
(``--rank-paths own``).  images/s counts the global batch; paths/s counts one path per rank
per step.  Efficiency = (N-rank images/s) / (N x 1-rank images/s); with one core per rank
and small convs, gloo's all-reduce of ~0.1-0.3 M gradients per step is the overhead measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def one(args) -> dict:
    import numpy as np
    import torch

    from hwnas.data import load_dataset
    from hwnas.distributed import process_group, wrap_for_training
    from hwnas.nn.supernet import Supernet
    from hwnas.search.loop import SearchConfig, _Loop, _rank_paths, _supernet_step
    from hwnas.space import get_space

    torch.set_num_threads(1)
    cfg = SearchConfig(space=args.space, batch_size=args.batch, grad_sync=args.grad_sync, threads=1)
    with process_group("cpu") as world:
        space = get_space(args.space)
        data = load_dataset("digits", space.default_resolution, seed=0)
        net = Supernet(space, data.num_classes, space.default_resolution, seed=0)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        train_net = wrap_for_training(net, world, args.grad_sync, "cpu")
        loop = _Loop(cfg, world, space, net, train_net, opt, None, None, data, 1, 32, time.perf_counter,
                     lambda e: None)
        xtr, ytr = data.train.tensors
        per = args.batch // world.size
        rng = np.random.default_rng(0)
        t0 = None
        for s in range(args.warmup + args.steps):
            if s == args.warmup:
                if world.active:
                    torch.distributed.barrier()
                t0 = time.perf_counter()
            idx = torch.arange(s * args.batch + world.rank * per, s * args.batch + (world.rank + 1) * per) % len(ytr)
            paths = _rank_paths(loop, [space.sample(rng)], None, 0, s)
            _supernet_step(loop, paths, xtr[idx], ytr[idx], warm=True)
        if world.active:
            torch.distributed.barrier()
        dt = time.perf_counter() - t0
    return {"ranks": world.size, "grad_sync": args.grad_sync if world.active else "-", "steps": args.steps,
            "seconds": round(dt, 3), "images_per_s": round(args.steps * args.batch / dt, 1),
            "paths_per_s": round(args.steps * world.size / dt, 2)}


def run_all(args) -> None:
    rows = []
    for n, sync in [(1, "ddp"), (2, "ddp"), (2, "allreduce"), (1, "ddp"), (2, "ddp"), (2, "allreduce")]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", __file__,
               "--space", args.space, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch", str(args.batch), "--grad-sync", sync]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        line = [s for s in out.stdout.splitlines() if s.startswith("{")]
        if out.returncode or not line:
            raise SystemExit(out.stderr[-2000:])
        rows.append(json.loads(line[0]))
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ddp.json").write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                                  "cores": os.cpu_count(), "rows": rows}, indent=2))
    best = {}
    for r in rows:  # two rounds, interleaved: keep each configuration's faster round
        key = (r["ranks"], r["grad_sync"])
        best[key] = max(best.get(key, r), r, key=lambda x: x["images_per_s"])
    base = best[(1, "-")]["images_per_s"]
    lines = ["# Data-parallel supernet training throughput (`benchmarks/ddp_bench.py`)", "",
             f"Machine: {os.cpu_count()} cores, CPU only (gloo); space `{args.space}`, global batch {args.batch}, "
             f"{args.steps} timed steps, best of two interleaved rounds.", "",
             "| ranks | grad sync | images/s | paths/s | efficiency vs 1 rank |", "|---|---|---|---|---|"]
    for (n, sync), r in sorted(best.items()):
        lines.append(f"| {n} | {sync} | {r['images_per_s']} | {r['paths_per_s']} | "
                     f"{r['images_per_s'] / (n * base):.2f} |")
    (RESULTS / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="launch every configuration and write results/ddp.{json,md}")
    p.add_argument("--space", default="tiny")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--grad-sync", default="ddp")
    args = p.parse_args()
    if args.all:
        return run_all(args)
    row = one(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
