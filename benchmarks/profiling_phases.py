"""Is the noise floor random jitter or phases of the machine?  (A diagnostic for issue 3.)

Why: the repeatability benchmark found fresh-session medians spreading far beyond 2% even
on an idle machine.  This script measures one fixed ``tiny`` arch in many fresh sessions
(default protocol, 10 warm-up + 50 timed runs), pinned alternately to each CPU, and reports
the medians in time order.  Random jitter gives a unimodal spread; a shared host that slows
the whole vCPU for seconds at a time gives two clusters whose ratio stays the same for every
arch, which no statistic taken inside one session can remove.

    .venv/bin/python benchmarks/profiling_phases.py [--sessions 24] [--out benchmarks/results/profiling_phases.md]
"""
from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import numpy as np
import onnxruntime

from hwnas.profiling.fingerprint import cpu_model
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.runner import measure
from hwnas.space import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=24)
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/profiling_phases.md"))
    args = ap.parse_args()
    sp = get_space("tiny")
    cpus = sorted(os.sched_getaffinity(0))
    lines = [
        "# Latency phases on this machine (diagnostic)", "",
        f"{datetime.date.today()}, CPU `{cpu_model()}` ({len(cpus)} vCPUs), ONNX Runtime {onnxruntime.__version__}, "
        f"tiny space, CPU EP, 1 thread, 10 warm-up + 50 timed runs per fresh session, sessions pinned "
        f"alternately to CPUs {cpus}; nothing else was running. Produced by `benchmarks/profiling_phases.py`.", "",
        "| arch | session medians in time order (ms) | fast cluster | slow cluster | slow / fast | CV |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for seed in range(args.archs):
        data = arch_to_onnx(sp, sp.sample(seed)).SerializeToString()
        meds = []
        for i in range(args.sessions):
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})
            meds.append(measure(data).median_ms)
        os.sched_setaffinity(0, set(cpus))
        m = np.array(meds)
        cut = (m.min() + m.max()) / 2
        fast, slow = m[m <= cut], m[m > cut]
        ratio = f"{np.median(slow) / np.median(fast):.2f}" if len(slow) and len(fast) else "-"
        lines.append(f"| `{sp.sample(seed)}` | {' '.join(f'{v:.3f}' for v in m)} | {np.median(fast):.3f} "
                     f"(n={len(fast)}) | {np.median(slow) if len(slow) else float('nan'):.3f} (n={len(slow)}) | "
                     f"{ratio} | {m.std() / m.mean():.1%} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
