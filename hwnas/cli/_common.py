"""Small helpers shared by the CLI modules: JSON output, the console, options."""
from __future__ import annotations

import math

import click

from hwnas import jsonutil

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")


def echo_json(obj) -> None:
    """Print ``obj`` as strict JSON (see ``hwnas.jsonutil``: NaN -> null, numpy -> Python)."""
    click.echo(jsonutil.dumps(obj, indent=2))


def console():
    from rich.console import Console

    return Console()


def human(n: float) -> str:
    """1234567 -> '1.23M' (FLOPs and params in tables)."""
    if n == 0 or not math.isfinite(n):
        return str(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"
