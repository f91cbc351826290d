"""How long does ``Arch -> ONNX`` take?  The direct builder vs the TorchScript exporter.

Why: profiling builds thousands of models, so the builder sits on the hot path of every
campaign.  Both builders run side by side on the same archs in one process, and the
figure that matters is the ratio, not the absolute number (shared, noisy machines).

    .venv/bin/python benchmarks/onnx_build_bench.py [--archs 20] [--out benchmarks/results/onnx_build.md]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from hwnas.nn import build_model
from hwnas.profiling.onnx_graph import arch_to_onnx, module_to_onnx
from hwnas.space import get_space


def time_space(name: str, n: int, seed: int) -> dict:
    sp = get_space(name)
    rng = np.random.default_rng(seed)
    archs = [sp.sample(rng) for _ in range(n)]
    direct, exporter, build_only = [], [], []
    for arch in archs:
        res = sp.resolution(arch)
        t0 = time.perf_counter()
        arch_to_onnx(sp, arch).SerializeToString()
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model = build_model(sp, arch).eval()
        build_only.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        module_to_onnx(model, (1, 3, res, res)).SerializeToString()
        exporter.append(time.perf_counter() - t0 + build_only[-1])
    med = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    return {"space": name, "archs": n, "direct_ms": med(direct), "build_module_ms": med(build_only),
            "torch_export_ms": med(exporter), "speedup": statistics.median(exporter) / statistics.median(direct)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/onnx_build.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [time_space(name, args.archs, args.seed) for name in ("tiny", "fbnet", "fbnetv2")]
    lines = [
        "# Arch -> ONNX build time",
        "",
        f"{datetime.date.today()}, {cpu_model()}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, torch threads 1, {args.archs} random archs per space (seed {args.seed}).",
        "Median per model.  `direct` = `arch_to_onnx` (builds the torch module, then writes the graph",
        "with `onnx.helper`, BN folded); `torch.onnx.export` = the same module through",
        "`torch.onnx.export(dynamo=False)`, module build included.",
        "",
        "| space | direct (ms) | of which module build (ms) | torch.onnx.export (ms) | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['space']} | {r['direct_ms']:.1f} | {r['build_module_ms']:.1f} | "
                     f"{r['torch_export_ms']:.1f} | {r['speedup']:.1f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
