"""SQLite latency store: one committed row per measured architecture.

Why SQLite in WAL mode: a campaign commits after every architecture, so a crash or a
``kill -9`` loses at most the architecture in flight; WAL lets ``hwnas data show`` read
while a campaign writes.  The schema version lives in ``PRAGMA user_version``; a file
of another version, a file that is not SQLite, or a path in a missing directory raises
``DataError`` and the file is never modified.

Rows are unique per (device, space, arch, batch, resolution, precision, ep) as the
latency-record contract in DESIGN.md says; ``ep`` is the *requested* provider (a
campaign's setting) and ``ep_used`` the one that ran (they differ only on a recorded
fallback).  A failed measurement is a row with ``status='error'`` and its error text.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import DataError, valid_list
from hwnas.profiling.fingerprint import device_name

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_APP_ID = 0x68776E61  # "hwna": marks the file as ours

_SCHEMA = """
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE latency (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    space TEXT NOT NULL, arch TEXT NOT NULL,
    batch INTEGER NOT NULL, resolution INTEGER NOT NULL, precision TEXT NOT NULL,
    ep TEXT NOT NULL, ep_used TEXT, fallback INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error TEXT,
    median_ms REAL, mean_ms REAL, std_ms REAL, p10_ms REAL, p90_ms REAL,
    runs INTEGER, warmup INTEGER, flops INTEGER, params INTEGER,
    build_ms REAL, export_ms REAL, session_ms REAL, first_run_ms REAL, timed_total_ms REAL,
    engine_build_ms REAL, extra TEXT, created TEXT NOT NULL,
    UNIQUE (device_id, space, arch, batch, resolution, precision, ep)
);
CREATE TABLE layer_latency (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    space TEXT NOT NULL, layer INTEGER NOT NULL, op TEXT NOT NULL, in_channels INTEGER NOT NULL,
    batch INTEGER NOT NULL, resolution INTEGER NOT NULL, precision TEXT NOT NULL, ep TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error TEXT,
    median_ms REAL, mean_ms REAL, std_ms REAL, p10_ms REAL, p90_ms REAL, runs INTEGER,
    baseline_ms REAL, created TEXT NOT NULL,
    UNIQUE (device_id, space, layer, op, in_channels, batch, resolution, precision, ep)
);
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    settings TEXT NOT NULL,
    archs TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE INDEX latency_space ON latency (space, device_id);
"""

# layer_latency row that holds the fixed part (stem + head, no searchable layer)
OVERHEAD_LAYER, OVERHEAD_OP = -1, "__stem_head__"

STAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "runs", "warmup")
ROW_COLUMNS = ("space", "arch", "batch", "resolution", "precision", "ep", "ep_used", "fallback", "status",
               "error", *STAT_COLUMNS, "flops", "params", "build_ms", "export_ms", "session_ms",
               "first_run_ms", "timed_total_ms", "engine_build_ms", "extra")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class LatencyDataset:
    """Measured latencies of one space on one device (only rows with status 'ok')."""

    space: str
    archs: tuple[str, ...]
    latency_ms: np.ndarray
    device_id: str
    fingerprint: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.archs)


class LatencyStore:
    """A latency database file (created if missing; its directory must exist)."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise DataError(f"directory of the database does not exist: {str(self.path.parent)!r} "
                            f"(create it first; db path {str(self.path)!r})")
        exists = self.path.exists()
        if exists and self.path.is_dir():
            raise DataError(f"{str(self.path)!r} is a directory, not a database file")
        if not exists and not create:
            raise DataError(f"latency database not found: {str(self.path)!r}")
        if exists:
            self._check_header()
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise DataError(f"cannot open latency database {str(self.path)!r}: {e}") from e
        try:
            self._init(exists)
        except DataError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise DataError(f"{str(self.path)!r} is not a usable hwnas latency database: {e}") from e

    # -- opening -------------------------------------------------------------
    def _check_header(self) -> None:
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise DataError(f"{str(self.path)!r} is not an SQLite database (corrupt or another kind of file); "
                            "refusing to touch it")

    def _init(self, exists: bool) -> None:
        c = self.conn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        app = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables or version:
            if app != _APP_ID and tables:
                raise DataError(f"{str(self.path)!r} is an SQLite database but not an hwnas latency store "
                                f"(tables: {valid_list(sorted(tables))})")
            if version != SCHEMA_VERSION:
                raise DataError(f"{str(self.path)!r} has latency-store schema version {version}, this hwnas "
                                f"reads version {SCHEMA_VERSION}; use a matching hwnas or a new --db file")
            check = c.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise DataError(f"{str(self.path)!r} is corrupt (SQLite quick_check: {check}); refusing to use it")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")  # durable against process death in WAL mode
        c.execute("PRAGMA foreign_keys=ON")
        if not tables:  # one transaction: a half-made schema is never left behind
            c.executescript("BEGIN IMMEDIATE;" + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};"
                            f"PRAGMA application_id={_APP_ID};COMMIT;")

    def transaction(self):
        """Group several writes into one all-or-nothing transaction (``with store.transaction():``)."""
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- devices -------------------------------------------------------------
    def add_device(self, fingerprint: dict, name: str | None = None) -> str:
        """Store a device once (idempotent) and return its id."""
        dev = fingerprint.get("device_id")
        if not dev:
            raise DataError("fingerprint has no 'device_id'")
        with self.transaction():
            self.conn.execute("INSERT OR IGNORE INTO devices (id, name, fingerprint, created) VALUES (?,?,?,?)",
                              (dev, name or device_name(fingerprint), json.dumps(fingerprint, sort_keys=True), _now()))
        return dev

    def fingerprint(self, device_id: str) -> dict:
        row = self.conn.execute("SELECT fingerprint FROM devices WHERE id=?", (device_id,)).fetchone()
        if row is None:
            raise DataError(f"no device {device_id!r} in {str(self.path)!r}")
        return json.loads(row[0])

    def devices(self) -> list[dict]:
        """Every device with its name, a fingerprint summary and row counts per space."""
        out = []
        for dev, name, fp in self.conn.execute("SELECT id, name, fingerprint FROM devices ORDER BY created, id"):
            fp = json.loads(fp)
            counts = {}
            for space, status, n, lo, hi in self.conn.execute(
                    "SELECT space, status, COUNT(*), MIN(median_ms), MAX(median_ms) FROM latency "
                    "WHERE device_id=? GROUP BY space, status", (dev,)):
                d = counts.setdefault(space, {"ok": 0, "error": 0, "min_ms": None, "max_ms": None})
                d[status] = n
                if status == "ok":
                    d["min_ms"], d["max_ms"] = lo, hi
            layers = self.conn.execute("SELECT COUNT(*) FROM layer_latency WHERE device_id=?", (dev,)).fetchone()[0]
            summary = {k: fp.get(k) for k in ("cpu_model", "gpu_name", "ort_version", "ep", "threads",
                                               "batch_size", "precision", "imported", "source") if fp.get(k) is not None}
            out.append({"id": dev, "name": name, "fingerprint": summary, "spaces": counts, "layer_rows": layers})
        return out

    def resolve_device(self, device: str | None, space: str, table: str = "latency") -> str:
        """Device id from an id, an id prefix or a name; the only one holding ``space`` if None."""
        ids = [r[0] for r in self.conn.execute(f"SELECT DISTINCT device_id FROM {table} WHERE space=? ORDER BY device_id", (space,))]
        if device is None:
            if len(ids) == 1:
                return ids[0]
            if not ids:
                raise DataError(f"no measurements of space {space!r} in {str(self.path)!r}")
            names = [f"{i} ({self._name(i)})" for i in ids]
            raise DataError(f"{str(self.path)!r} holds space {space!r} on {len(ids)} devices; pick one with "
                            f"device=/--device: {valid_list(names)}")
        rows = self.conn.execute("SELECT id, name FROM devices").fetchall()
        hits = [i for i, n in rows if device in (i, n) or i.startswith(device)]
        if len(hits) != 1:
            what = "matches several devices" if hits else "matches no device"
            raise DataError(f"device {device!r} {what}; valid: {valid_list(f'{i} ({n})' for i, n in rows)}")
        return hits[0]

    def _name(self, device_id: str) -> str:
        row = self.conn.execute("SELECT name FROM devices WHERE id=?", (device_id,)).fetchone()
        return row[0] if row else "?"

    # -- latency rows ---------------------------------------------------------
    def add_row(self, device_id: str, row: dict) -> bool:
        """Insert and commit one row; False if that (device, space, arch, settings) is stored."""
        values = {k: row.get(k) for k in ROW_COLUMNS}
        for k in ("space", "arch", "batch", "resolution", "precision", "ep", "status"):
            if values[k] is None:
                raise DataError(f"latency row is missing {k!r}")
        if values["status"] == "ok":
            med = values["median_ms"]
            if med is None or not math.isfinite(med) or med <= 0:
                raise DataError(f"latency row for {values['arch']} has median_ms={med!r}; must be finite and > 0")
        if isinstance(values["extra"], dict):
            values["extra"] = json.dumps(values["extra"], sort_keys=True, default=str)
        values["fallback"] = int(bool(values["fallback"]))
        cols = ("device_id", *ROW_COLUMNS, "created")
        sql = (f"INSERT INTO latency ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               "ON CONFLICT DO NOTHING")
        with self.transaction():
            cur = self.conn.execute(sql, (device_id, *values.values(), _now()))
        return cur.rowcount == 1

    def measured_archs(self, device_id: str, space: str, *, batch: int, precision: str, ep: str,
                       resolution: int | None = None) -> set[str]:
        """Archs with a row (ok or error) for these settings: a campaign skips them."""
        sql = "SELECT arch FROM latency WHERE device_id=? AND space=? AND batch=? AND precision=? AND ep=?"
        args = [device_id, space, batch, precision, ep]
        if resolution is not None:
            sql += " AND resolution=?"
            args.append(resolution)
        return {r[0] for r in self.conn.execute(sql, args)}

    def rows(self, space: str | None = None, device_id: str | None = None, status: str | None = None) -> list[dict]:
        """Rows as dicts (with the device name), in insertion order."""
        sql = ("SELECT l.*, d.name AS device_name FROM latency l JOIN devices d ON d.id = l.device_id WHERE 1=1")
        args = []
        for col, val in (("l.space", space), ("l.device_id", device_id), ("l.status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        cur = self.conn.execute(sql + " ORDER BY l.id", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def dataset(self, space: str, device: str | None = None, ep: str | None = None,
                resolution: int | None = None) -> LatencyDataset:
        """Rows with status 'ok' of ``space`` on one device; ``ep`` filters the provider
        that ran (``ep_used``).  Several devices (or, for a fixed-resolution space,
        several resolutions) without a choice raise ``DataError`` listing them."""
        dev = self.resolve_device(device, space)
        sql = ("SELECT arch, median_ms, batch, resolution, precision, COALESCE(ep_used, ep) FROM latency "
               "WHERE space=? AND device_id=? AND status='ok'")
        args = [space, dev]
        if ep is not None:
            sql += " AND COALESCE(ep_used, ep)=?"
            args.append(ep)
        if resolution is not None:
            sql += " AND resolution=?"
            args.append(int(resolution))
        rows = self.conn.execute(sql + " ORDER BY id", args).fetchall()
        if not rows:
            raise DataError(f"no successful measurements of space {space!r} on device {dev} "
                            f"(ep={ep}, resolution={resolution}) in {str(self.path)!r}")
        archs = [r[0] for r in rows]
        if len(set(archs)) != len(archs):
            combos = sorted({f"batch={r[2]} resolution={r[3]} {r[4]} ep={r[5]}" for r in rows})
            raise DataError(f"space {space!r} on device {dev} holds the same archs under several settings; "
                            f"pick resolution=/ep=: {valid_list(combos)}")
        return LatencyDataset(space=space, archs=tuple(archs),
                              latency_ms=np.asarray([r[1] for r in rows], dtype=np.float64),
                              device_id=dev, fingerprint=self.fingerprint(dev))

    # -- per-layer rows --------------------------------------------------------
    def add_layer_row(self, device_id: str, row: dict) -> bool:
        cols = ("space", "layer", "op", "in_channels", "batch", "resolution", "precision", "ep", "status",
                "error", "median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "runs", "baseline_ms")
        vals = [row.get(k) for k in cols]
        sql = (f"INSERT INTO layer_latency (device_id, {', '.join(cols)}, created) "
               f"VALUES ({', '.join('?' * (len(cols) + 2))}) ON CONFLICT DO NOTHING")
        with self.transaction():
            cur = self.conn.execute(sql, (device_id, *vals, _now()))
        return cur.rowcount == 1

    def measured_layers(self, device_id: str, space: str, *, batch: int, resolution: int, precision: str,
                        ep: str) -> set[tuple[int, str, int]]:
        return {tuple(r) for r in self.conn.execute(
            "SELECT layer, op, in_channels FROM layer_latency WHERE device_id=? AND space=? AND batch=? "
            "AND resolution=? AND precision=? AND ep=?", (device_id, space, batch, resolution, precision, ep))}

    def layer_table(self, space: str, device: str | None = None) -> dict[tuple[int, str, int], float]:
        """(layer index, op name, input channels) -> median ms, from ``profile --layers``."""
        dev = self.resolve_device(device, space, table="layer_latency")
        return {(int(i), op, int(c)): float(m) for i, op, c, m in self.conn.execute(
            "SELECT layer, op, in_channels, median_ms FROM layer_latency WHERE space=? AND device_id=? "
            "AND status='ok' AND layer>=0 ORDER BY id", (space, dev))}

    def layer_overhead_ms(self, space: str, device: str | None = None) -> float | None:
        """Latency of the stem + head network (no searchable layer), if measured."""
        dev = self.resolve_device(device, space, table="layer_latency")
        row = self.conn.execute("SELECT median_ms FROM layer_latency WHERE space=? AND device_id=? AND layer=? "
                                "AND status='ok'", (space, dev, OVERHEAD_LAYER)).fetchone()
        return None if row is None else float(row[0])

    # -- campaigns ---------------------------------------------------------------
    def open_campaign(self, key: str) -> tuple[int, list[str]] | None:
        """The newest unfinished campaign with this settings key: (id, planned archs)."""
        row = self.conn.execute("SELECT id, archs FROM campaigns WHERE key=? AND done=0 ORDER BY id DESC LIMIT 1",
                                (key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def start_campaign(self, key: str, settings: dict, archs: list[str]) -> int:
        with self.transaction():
            cur = self.conn.execute("INSERT INTO campaigns (key, settings, archs, created) VALUES (?,?,?,?)",
                                    (key, json.dumps(settings, sort_keys=True), json.dumps(archs), _now()))
        return cur.lastrowid

    def finish_campaign(self, campaign_id: int) -> None:
        with self.transaction():
            self.conn.execute("UPDATE campaigns SET done=1 WHERE id=?", (campaign_id,))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); the connection is in
    autocommit mode so each call here is one durable transaction."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.own = True
        else:
            self.own = False
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if not self.own:
            return False
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False
