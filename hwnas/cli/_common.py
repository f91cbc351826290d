"""Small helpers shared by the CLI modules: JSON output, the console, options."""
from __future__ import annotations

import json
import math

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")


def echo_json(obj) -> None:
    """Print ``obj`` as JSON (dataclasses and numpy scalars are converted)."""
    click.echo(json.dumps(obj, indent=2, default=_default, allow_nan=False))


def _default(o):
    import dataclasses

    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
