"""``hwnas data``: look at, export and import latency databases."""
from __future__ import annotations

import click

from hwnas.cli._common import console, echo_json, json_option

_db = click.option("--db", required=True, type=click.Path(dir_okay=False), help="SQLite latency database.")


@click.group("data")
def data():
    """Latency databases: show, export (CSV/Parquet), import (CSV from elsewhere)."""


@data.command("show")
@_db
@json_option
def show(db, as_json):
    """Devices, row counts and latency range per space."""
    from hwnas.profiling.store import LatencyStore

    with LatencyStore(db, create=False) as store:
        devs = store.devices()
    if as_json:
        echo_json({"db": db, "devices": devs})
        return
    from rich.table import Table

    t = Table(title=f"latency data in {db}")
    for col in ("device", "name", "space", "ok", "errors", "min ms", "max ms", "max/min", "layer rows"):
        t.add_column(col, justify="right" if col not in ("device", "name", "space") else "left")
    for d in devs:
        for space, c in sorted(d["spaces"].items()) or [("-", {"ok": 0, "error": 0, "min_ms": None, "max_ms": None})]:
            lo, hi = c["min_ms"], c["max_ms"]
            t.add_row(d["id"], d["name"], space, str(c["ok"]), str(c["error"]),
                      f"{lo:.4g}" if lo else "-", f"{hi:.4g}" if hi else "-",
                      f"{hi / lo:.2f}x" if lo and hi else "-", str(d["layer_rows"]))
    console().print(t)


@data.command("export")
@_db
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write CSV here.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False), default=None, help="Write Parquet here.")
@click.option("--space", default=None, help="Only this space.")
@click.option("--device", default=None, help="Only this device (id, id prefix or name; needs --space).")
@json_option
def export(db, csv_path, parquet_path, space, device, as_json):
    """Export successful measurements (latency_ms = median) to CSV or Parquet."""
    from hwnas.profiling.store import LatencyStore
    from hwnas.profiling.transfer import export_rows, write_csv, write_parquet

    if (csv_path is None) == (parquet_path is None):
        raise click.UsageError("give exactly one of --csv FILE or --parquet FILE")
    with LatencyStore(db, create=False) as store:
        rows = export_rows(store, space, device)
    if csv_path:
        write_csv(rows, csv_path)
    else:
        write_parquet(rows, parquet_path)
    out = {"rows": len(rows), "path": csv_path or parquet_path}
    echo_json(out) if as_json else click.echo(f"wrote {out['rows']} rows to {out['path']}")


@data.command("import")
@_db
@click.option("--space", required=True, help="Space the arch strings belong to.")
@click.option("--csv", "csv_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with columns arch, latency_ms (+ optional extra columns, kept).")
@click.option("--device", required=True, help="Name of the device these latencies were measured on.")
@json_option
def import_(db, space, csv_path, device, as_json):
    """Load latencies measured elsewhere (validated first; a bad row changes nothing)."""
    from hwnas.profiling.store import LatencyStore
    from hwnas.profiling.transfer import import_csv

    with LatencyStore(db) as store:
        dev, added = import_csv(store, space, csv_path, device)
    out = {"device_id": dev, "device": device, "added": added, "db": db}
    echo_json(out) if as_json else click.echo(f"imported {added} rows as device {device!r} ({dev}) into {db}")
