"""Latency data in and out of the store: CSV / Parquet export, CSV import.

Why import: a user should be able to train a predictor on latencies measured by another
lab or on a device this machine cannot reach.  Imported rows get a device of their own
(``--device NAME``; its id is a hash of the name) whose fingerprint records the name and
the source file, and only the canonical ``arch`` string and ``latency_ms`` are required.
Imported rows are uncalibrated in the importing store (no canary of its own was run); a
source's ``calibrated``/``ratio``/raw-median columns are kept in ``extra`` as ``source_*``.
An export starts with one ``# fingerprint <id> <JSON>`` comment line per device (with the
canary and its reference), which readers that treat ``#`` lines as comments skip.
Known columns (``mean_ms``, ``std_ms``, ``p10_ms``, ``p90_ms``, ``runs``, ``warmup``,
``batch``, ``resolution``, ``precision``, ``ep``, ``flops``, ``params``) fill their own
fields; every other column is kept as JSON in ``extra``.  The whole file is validated
before anything is written, and written in one transaction, so a bad row changes nothing.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

from hwnas.errors import DataError, HwnasError
from hwnas.space import get_space

EXPORT_COLUMNS = ("space", "arch", "latency_ms", "calibrated", "ratio", "median_ms", "canary_median_ms", "mean_ms",
                  "std_ms", "p10_ms", "p90_ms", "runs", "warmup", "batch", "resolution", "precision", "ep", "ep_used",
                  "fallback", "flops", "params", "session_ms", "build_ms", "export_ms", "device_id", "device_name",
                  "created")
FINGERPRINT_PREFIX = "# fingerprint "  # a comment line: '# fingerprint <device id> <JSON>'

_FLOAT = ("mean_ms", "std_ms", "p10_ms", "p90_ms")
# columns of an export that describe the source's protocol, not a row of the importing store
_SOURCE_ONLY = ("median_ms", "ratio", "canary_median_ms", "calibrated")
_INT = ("runs", "warmup", "batch", "resolution", "flops", "params")
_TEXT = ("precision", "ep")


def export_rows(store, space: str | None = None, device: str | None = None) -> list[dict]:
    """Successful rows as flat dicts: ``latency_ms`` (calibrated where ``calibrated`` is 1),
    the ratio and the raw arch and canary medians beside it."""
    if device is not None and space is None:
        raise DataError("--device needs --space")
    dev = store.resolve_device(device, space) if device is not None else None
    out = [{k: r.get(k) for k in EXPORT_COLUMNS} for r in store.rows(space, dev, status="ok")]
    if not out:
        raise DataError(f"nothing to export from {str(store.path)!r} (space={space}, device={device})")
    return out


def export_fingerprints(store, rows: list[dict]) -> dict[str, dict]:
    """The fingerprint of every device in ``rows``, with the canary (and its reference) of
    its calibrated rows: what a reader needs to know which machine, and at what scale."""
    out = {}
    for dev, sp in dict.fromkeys((r["device_id"], r["space"]) for r in rows):
        fp = out.setdefault(dev, store.fingerprint(dev))
        canaries = [c for c in store.canaries(dev) if c["space"] == sp]
        if len(canaries) == 1:
            fp["canary"] = canaries[0]
    return out


def read_csv_fingerprints(path) -> dict[str, dict]:
    """The ``# fingerprint`` comment lines of a CSV written by ``write_csv``."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith(FINGERPRINT_PREFIX):
                dev, _, blob = line[len(FINGERPRINT_PREFIX):].partition(" ")
                try:
                    out[dev] = json.loads(blob)
                except json.JSONDecodeError as e:
                    raise DataError(f"{str(path)!r}: bad fingerprint comment for {dev}: {e}") from None
    return out


def write_csv(rows: list[dict], path, fingerprints: dict[str, dict] | None = None) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        for dev, fp in (fingerprints or {}).items():
            f.write(f"{FINGERPRINT_PREFIX}{dev} {json.dumps(fp, sort_keys=True, default=str)}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_parquet(rows: list[dict], path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError("Parquet export needs pyarrow: pip install 'hwnas[parquet]'") from e
    pq.write_table(pa.Table.from_pylist(rows), str(path))


def imported_device(name: str, source) -> dict:
    if not name or not name.strip():
        raise DataError("--device must be a non-empty name for the imported data")
    dev = hashlib.sha256(f"import:{name}".encode()).hexdigest()[:12]
    return {"device_id": dev, "name": name, "imported": True, "source": Path(source).name}


def read_latency_records(space, path) -> list[tuple[str, float, dict, str]]:
    """The validated data rows of a latency CSV: ``(arch, latency_ms, the other columns,
    'FILE line N')`` each.  The one reader of the format, shared by ``hwnas data import``
    and ``hwnas predictor train --csv``: a header with at least ``arch`` (the space's
    canonical string) and ``latency_ms`` (finite, > 0), ``#`` lines are comments."""
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e}") from e
    out = []
    with f:
        reader = csv.DictReader(row for row in f if not row.lstrip().startswith("#"))
        cols = reader.fieldnames or []
        missing = [c for c in ("arch", "latency_ms") if c not in cols]
        if missing:
            raise DataError(f"{str(path)!r} lacks column(s) {', '.join(missing)}; it has: {', '.join(cols) or 'none'}")
        for line, rec in enumerate(reader, start=2):
            where = f"{Path(path).name} line {line}"
            try:
                arch = str(space.parse(rec["arch"] or ""))
            except HwnasError as e:
                raise DataError(f"{where}: bad arch for space {space.name!r}: {e}") from None
            try:
                lat = float(rec["latency_ms"])
            except (TypeError, ValueError):
                raise DataError(f"{where}: latency_ms {rec['latency_ms']!r} is not a number") from None
            if not math.isfinite(lat) or lat <= 0:
                raise DataError(f"{where}: latency_ms must be finite and > 0, got {rec['latency_ms']!r}")
            others = {k: v for k, v in rec.items() if k not in ("arch", "latency_ms") and k is not None}
            out.append((arch, lat, others, where))
    if not out:
        raise DataError(f"{str(path)!r} has no data rows")
    return out


def read_import_csv(space_name: str, path) -> list[dict]:
    """Validate a CSV of measured latencies; rows ready for ``LatencyStore.add_row``."""
    space = get_space(space_name)
    seen: dict = {}
    return [_import_row(space, arch, lat, rec, where, seen)
            for arch, lat, rec, where in read_latency_records(space, path)]


def _import_row(space, arch: str, lat: float, rec: dict, where: str, seen: dict) -> dict:
    row = {"space": space.name, "arch": arch, "median_ms": lat, "status": "ok", "batch": 1,
           "precision": "fp32", "ep": "imported"}
    extra = {}
    for k, v in rec.items():
        if v in (None, ""):
            continue
        try:
            if k in _SOURCE_ONLY:
                extra[f"source_{k}"] = v
            elif k in _FLOAT:
                row[k] = float(v)
            elif k in _INT:
                row[k] = int(float(v))
            elif k in _TEXT:
                row[k] = v
            else:
                extra[k] = v
        except ValueError:
            raise DataError(f"{where}: column {k!r} = {v!r} is not a number") from None
    try:
        row["resolution"] = space.resolution(space.parse(arch), row.get("resolution"))
    except HwnasError as e:
        raise DataError(f"{where}: {e}") from None
    key = (row["arch"], row["batch"], row["resolution"], row["precision"], row["ep"])
    if key in seen:
        raise DataError(f"{where}: duplicate of {seen[key]} (same arch and settings)")
    seen[key] = where
    row["extra"] = json.dumps(extra, sort_keys=True) if extra else None
    return row


def import_csv(store, space: str, path, device: str) -> tuple[str, int]:
    """Import a CSV into ``store`` under device ``device``; (device id, rows added)."""
    rows = read_import_csv(space, path)
    fp = imported_device(device, path)
    with store.transaction():
        dev = store.add_device(fp, name=device)
        added = sum(store.add_row(dev, r) for r in rows)
    return dev, added
