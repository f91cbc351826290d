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
    """Devices, row counts, latency range, calibration and machine speed per space.

    \b
    calibrated: rows timed against the canary (latency_ms = ratio x reference);
    the rest are plain or imported rows.  speed: the canary's median when each row
    was measured over its reference (1 = as calibrated; min / median / max).
    """
    from hwnas.profiling.store import LatencyStore

    with LatencyStore(db, create=False) as store:
        devs = store.devices()
    if as_json:
        echo_json({"db": db, "devices": devs})
        return
    from rich.table import Table

    t = Table(title=f"latency data in {db}")
    cols = ("device", "name", "space", "ok", "errors", "calibrated", "min ms", "max ms", "max/min", "speed",
            "layer rows")
    for col in cols:
        t.add_column(col, justify="right" if col not in ("device", "name", "space", "speed") else "left")
    empty = {"ok": 0, "error": 0, "min_ms": None, "max_ms": None, "calibrated": 0}
    for d in devs:
        for space, c in sorted(d["spaces"].items()) or [("-", empty)]:
            lo, hi = c["min_ms"], c["max_ms"]
            sf = c.get("speed_factor")
            speed = f"{sf['min']:.2f} / {sf['median']:.2f} / {sf['max']:.2f}" if sf else "-"
            cal = str(c["calibrated"]) if c["calibrated"] else ("0 (uncalibrated)" if c["ok"] else "0")
            t.add_row(d["id"], d["name"], space, str(c["ok"]), str(c["error"]), cal,
                      f"{lo:.4g}" if lo else "-", f"{hi:.4g}" if hi else "-",
                      f"{hi / lo:.2f}x" if lo and hi else "-", speed, str(d["layer_rows"]))
    console().print(t)
    for d in devs:
        for c in d["canaries"]:
            click.echo(f"canary of {d['id']} {c['space']} {c['resolution']}px b{c['batch']}: {c['arch']} "
                       f"reference {c['reference_ms']:.4f} ms ({c['calibration']['statistic']}, {c['created']}); "
                       + _state_line(c))
        if d["lacks"]:
            click.echo(f"device {d['id']} fingerprint lacks: {', '.join(d['lacks'])} (measured by an older hwnas "
                       "or imported; it cannot be told apart from other machines of its name)")


def _state_line(canary: dict) -> str:
    """The canary's state constant and why it is what it is (``hwnas.profiling.contention``)."""
    from hwnas.profiling.contention import gamma_of

    state = canary["calibration"].get("state")
    if not state:
        return "state constant 0 (calibrated without probes)"
    return f"state constant {gamma_of(canary):.2f} ({state['why']})"


@data.command("recalibrate")
@_db
@click.option("--space", default=None, help="Only the canary of this space.")
@click.option("--device", default=None, help="Only this device (id, id prefix or name).")
@click.option("--sessions", type=click.IntRange(min=1), default=None,
              help="Canary sessions of the calibration block [default: as profile].")
@json_option
def recalibrate(db, space, device, sessions, as_json):
    """Re-measure the canary reference(s) on this machine and rescale the stored rows.

    Each calibrated row keeps its ratio to the canary and the canary's median, so its
    latency_ms becomes the ratio (decompressed by the newly learned state constant)
    x the new reference; raw numbers are untouched and the old reference stays in the
    canary's history.  Refused for a device measured on another machine.
    """
    from hwnas.errors import DataError
    from hwnas.profiling.canary import CALIBRATION_SESSIONS, recalibrate_store
    from hwnas.profiling.contention import gamma_of
    from hwnas.profiling.store import LatencyStore

    out = []
    with LatencyStore(db, create=False) as store:
        rows = [c for c in store.canaries() if space is None or c["space"] == space]
        if device is not None:
            ids = {d["id"] for d in store.devices() if device in (d["id"], d["name"]) or d["id"].startswith(device)}
            rows = [c for c in rows if c["device_id"] in ids]
        if not rows:
            raise DataError(f"no canary in {db!r} for space={space}, device={device}; a paired 'hwnas profile' "
                            "campaign creates one")
        for c in rows:
            ref, n = recalibrate_store(store, c, sessions=sessions or CALIBRATION_SESSIONS)
            out.append({"device_id": c["device_id"], "space": c["space"], "canary": c["arch"],
                        "old_reference_ms": c["reference_ms"], "new_reference_ms": ref.reference_ms,
                        "old_gamma": gamma_of(c), "new_gamma": ref.gamma,
                        "rows_rescaled": n})
    if as_json:
        echo_json({"db": db, "recalibrated": out})
        return
    for o in out:
        click.echo(f"{o['device_id']} {o['space']}: reference {o['old_reference_ms']:.4f} -> "
                   f"{o['new_reference_ms']:.4f} ms ({o['new_reference_ms'] / o['old_reference_ms']:.3f}x), "
                   f"state constant {o['old_gamma']:.2f} -> {o['new_gamma']:.2f}, {o['rows_rescaled']} rows rescaled")


@data.command("drift")
@_db
@click.option("--space", default=None, help="Only rows of this space.")
@click.option("--png", "png", type=click.Path(dir_okay=False), default=None, help="Plot the speed factor here.")
@json_option
def drift(db, space, png, as_json):
    """The machine's speed while it was profiled: canary median / reference per row."""
    from hwnas.profiling.drift import drift_report, plot_drift
    from hwnas.profiling.store import LatencyStore

    with LatencyStore(db, create=False) as store:
        rep = drift_report(store, space)
    if png:
        plot_drift(rep, png)
    if as_json:
        echo_json({"db": db, "png": png, "devices": rep})
        return
    for d in rep:
        click.echo(f"{d['device_id']} ({d['name']}): {d['rows']} rows, speed factor min {d['min']:.3f} / "
                   f"median {d['median']:.3f} / max {d['max']:.3f} (swing {d['swing']:.2f}x)")
    if png:
        click.echo(f"wrote {png}")


@data.command("export")
@_db
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write CSV here.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False), default=None, help="Write Parquet here.")
@click.option("--space", default=None, help="Only this space.")
@click.option("--device", default=None, help="Only this device (id, id prefix or name; needs --space).")
@json_option
def export(db, csv_path, parquet_path, space, device, as_json):
    """Export successful measurements to CSV or Parquet (latency_ms, raw statistics, the canary)."""
    from hwnas.profiling.store import LatencyStore
    from hwnas.profiling.transfer import export_fingerprints, export_rows, write_csv, write_parquet

    if (csv_path is None) == (parquet_path is None):
        raise click.UsageError("give exactly one of --csv FILE or --parquet FILE")
    with LatencyStore(db, create=False) as store:
        rows = export_rows(store, space, device)
        fps = export_fingerprints(store, rows)
    if csv_path:
        write_csv(rows, csv_path, fps)
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
