"""Seconds per supernet training epoch: the ``tiny`` space on ``digits`` at 32x32 (CPU).

Usage: ``python benchmarks/supernet_epoch.py [--threads 1 2] [--epochs 2] [--batch 64]
[--layouts channels_last contiguous]``.
Writes ``benchmarks/results/supernet_epoch.md`` (and prints it).  Each row trains a fresh
seeded supernet for ``--epochs`` epochs of uniform single-path sampling on the full
digits training split (1437 images) and reports the median epoch time, plus the accuracy
of three fixed paths on the validation split (BN batch statistics) after the last epoch.
The machine's load average is recorded: other processes on a 2-core machine inflate the
figures a lot, especially with 2 threads.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hwnas.data import load_dataset, make_loader
from hwnas.nn.supernet import Supernet, evaluate_arch, train_supernet_epoch
from hwnas.space import get_space

OUT = Path(__file__).resolve().parent / "results" / "supernet_epoch.md"


def run(threads: int, epochs: int, batch: int, channels_last: bool) -> dict:
    torch.set_num_threads(threads)
    data = load_dataset("digits", 32, seed=0)
    space = get_space("tiny")
    net = Supernet(space, num_classes=data.num_classes, seed=0, channels_last=channels_last)
    rng = np.random.default_rng(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    times = []
    for epoch in range(epochs):
        t = time.perf_counter()
        stats = train_supernet_epoch(net, make_loader(data.train, batch, seed=epoch), opt, lambda: space.sample(rng))
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    accs = [evaluate_arch(net, space.sample(100 + i), data.val)[1] for i in range(3)]
    eval_s = (time.perf_counter() - t) / 3
    return {"threads": threads, "batch": batch, "channels_last": channels_last, "epoch_s": statistics.median(times),
            "train_acc": stats["acc"], "val_acc": float(np.mean(accs)), "eval_s": eval_s,
            "steps": stats["batches"], "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--layouts", choices=["channels_last", "contiguous"], nargs="+", default=["channels_last"])
    args = ap.parse_args()
    rows = [run(t, args.epochs, args.batch, layout == "channels_last") for t in args.threads for layout in args.layouts]
    lines = [
        "# Supernet epoch time: tiny space, digits 32x32, CPU",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.epochs} epochs of uniform single-path training, 1437 train images, median epoch time.",
        "Accuracy: mean over 3 fixed paths on the 360 validation images (BN batch statistics).",
        "",
        "| threads | batch | channels_last | steps/epoch | s/epoch | train acc (last epoch) | val acc | s per path eval | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['batch']} | {r['channels_last']} | {r['steps']} | {r['epoch_s']:.2f} | "
                     f"{r['train_acc']:.3f} | {r['val_acc']:.3f} | {r['eval_s']:.2f} | {r['load']:.1f} |")
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
