"""``hwnas space``: inspect search spaces (layers, choices, size, cost range)."""
from __future__ import annotations

import click

from hwnas.cli._common import echo_json, human, json_option


@click.group()
def space():
    """Inspect search spaces: built-in names or a YAML file."""


@space.command("list")
@json_option
def list_cmd(as_json):
    """List the registered search spaces."""
    from hwnas.space import get_space, list_spaces

    rows = [{"name": n, "size": get_space(n).size_str(), "description": get_space(n).description} for n in list_spaces()]
    if as_json:
        return echo_json(rows)
    for r in rows:
        click.echo(f"{r['name']:10s} {r['size']:>40s}  {r['description'][:60]}")


@space.command("show")
@click.argument("name")
@click.option("--arch", "arch_str", help="Show one architecture (canonical string) instead of the space.")
@click.option("--resolution", type=int, help="Input resolution (must be one the space allows).")
@json_option
def show(name, arch_str, resolution, as_json):
    """Show a space's layers, choices, size and FLOPs/params range, or one architecture.

    NAME is a built-in space (see 'hwnas space list') or a path to a YAML file.
    """
    from hwnas.space import get_space

    sp = get_space(name)
    if arch_str is not None:
        return _show_arch(sp, arch_str, resolution, as_json)
    from hwnas.cost import cost_extremes

    (fmin, amin), (fmax, amax) = cost_extremes(sp, "flops")
    (pmin, _), (pmax, _) = cost_extremes(sp, "params")
    info = {
        "name": sp.name, "description": sp.description, "size": sp.size(), "size_str": sp.size_str(),
        "resolutions": list(sp.resolutions), "searchable_resolution": sp.searchable_resolution,
        "num_classes": sp.num_classes, "factorized": sp.factorized,
        "stem": {"channels": sp.stem.channels, "kernel": sp.stem.kernel, "stride": sp.stem.stride},
        "head_channels": sp.head_channels,
        "flops_range": [fmin, fmax], "params_range": [pmin, pmax],
        "cheapest_arch": str(amin), "most_expensive_arch": str(amax),
        "decisions": [
            {"name": d.name, "choices": list(d.choices), "dims": {k: list(v) for k, v in d.dim_values().items()}}
            for d in sp.decisions
        ],
        "layers": [
            {"stage": l.stage, "channels": l.channels, "stride": l.stride, "num_choices": len(l.ops)}
            for l in sp.layers
        ],
    }
    if as_json:
        return echo_json(info)
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{sp.name}[/]: {sp.description}")
    con.print(f"size: {sp.size_str()} architectures; resolutions {list(sp.resolutions)}"
              f"{' (searchable)' if sp.searchable_resolution else ''}; {sp.num_classes} classes")
    con.print(f"FLOPs (multiply-adds): {human(fmin)} .. {human(fmax)};  params: {human(pmin)} .. {human(pmax)}")
    t = Table("decision", "stage", "channels", "stride", "choices")
    layer_iter = iter(sp.layers)
    for d in sp.decisions:
        layer = None if d.name == "resolution" else next(layer_iter)
        choices = ", ".join(d.choices) if len(d.choices) <= 12 else \
            f"{len(d.choices)}: " + "; ".join(f"{k} {list(v)}" for k, v in d.dim_values().items() if len(v) > 1)
        t.add_row(d.name, *(("-", "-", "-") if layer is None else (str(layer.stage), str(layer.channels), str(layer.stride))), choices)
    con.print(t)


def _show_arch(sp, arch_str, resolution, as_json):
    from hwnas.cost import arch_cost
    from hwnas.space import plan_arch

    arch = sp.parse(arch_str)
    plan = plan_arch(sp, arch, resolution)
    cost = arch_cost(sp, arch, plan.resolution)
    rows = [
        {"layer": i, "op": lp.op.name, "in": [lp.in_channels, lp.in_size, lp.in_size],
         "out": [lp.out_channels, lp.out_size, lp.out_size], "stride": lp.stride, "hidden": lp.hidden,
         "residual": lp.residual, "flops": c.flops, "params": c.params}
        for i, (lp, c) in enumerate(zip(plan.layers, cost.layers))
    ]
    info = {"space": sp.name, "arch": str(arch), "resolution": plan.resolution, "flops": cost.flops,
            "params": cost.params, "layers": rows}
    if as_json:
        return echo_json(info)
    from rich.console import Console
    from rich.table import Table

    t = Table("layer", "op", "in (CxHxW)", "out (CxHxW)", "stride", "residual", "FLOPs", "params")
    for r in rows:
        t.add_row(str(r["layer"]), r["op"], "x".join(map(str, r["in"])), "x".join(map(str, r["out"])),
                  str(r["stride"]), "yes" if r["residual"] else "", human(r["flops"]), human(r["params"]))
    con = Console()
    con.print(f"[bold]{arch}[/] ({sp.name}, {plan.resolution}x{plan.resolution})")
    con.print(t)
    con.print(f"total FLOPs (multiply-adds) {human(cost.flops)}, params {human(cost.params)}")


@space.command("sample")
@click.argument("name")
@click.option("-n", "--num", default=5, show_default=True, type=click.IntRange(min=1), help="How many archs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@json_option
def sample(name, num, seed, as_json):
    """Print NUM random canonical architecture strings of a space."""
    import numpy as np

    from hwnas.space import get_space

    sp = get_space(name)
    rng = np.random.default_rng(seed)
    archs = [str(sp.sample(rng)) for _ in range(num)]
    if as_json:
        return echo_json(archs)
    for a in archs:
        click.echo(a)
