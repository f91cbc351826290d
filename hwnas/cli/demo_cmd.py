"""``hwnas demo``: the main job on the embedded defaults (README command one)."""
from __future__ import annotations

import time

import click

from hwnas.cli._common import human


@click.command()
@click.option("--space", default="tiny", show_default=True, help="Search space.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
def demo(space, seed):
    """Run as much of profile -> predictor -> search -> export as is built, on the CPU."""
    import numpy as np
    import onnxruntime as ort

    from hwnas.cost import arch_cost
    from hwnas.profiling.onnx_graph import arch_to_onnx
    from hwnas.space import get_space

    sp = get_space(space)
    arch = sp.sample(seed)
    t0 = time.perf_counter()
    proto = arch_to_onnx(sp, arch)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sp.resolution(arch)
    out = sess.run(None, {"input": np.zeros((1, 3, res, res), np.float32)})[0]
    cost = arch_cost(sp, arch)
    click.echo(f"{sp.name}: {sp.size_str()} archs; sampled {arch}: FLOPs {human(cost.flops)}, "
               f"params {human(cost.params)}; ONNX built and run in ORT ({out.shape}) in "
               f"{time.perf_counter() - t0:.2f} s")
    click.echo("not built yet: profile, predictor, search, export (see README)")
