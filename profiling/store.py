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
from hwnas.profiling.fingerprint import device_name, missing_identity

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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
    latency_ms REAL, ratio REAL, canary_median_ms REAL, canary_id INTEGER REFERENCES canaries(id),
    calibrated INTEGER NOT NULL DEFAULT 0,
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

_CANARIES = """
CREATE TABLE canaries (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    space TEXT NOT NULL, resolution INTEGER NOT NULL, batch INTEGER NOT NULL,
    arch TEXT NOT NULL, sha256 TEXT NOT NULL,
    reference_ms REAL NOT NULL CHECK (reference_ms > 0),
    calibration TEXT NOT NULL,
    history TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    UNIQUE (device_id, space, resolution, batch)
);
"""

# schema 1 -> 2: the canary columns; every old row becomes an uncalibrated row
_MIGRATE_1_2 = _CANARIES + """
ALTER TABLE latency ADD COLUMN latency_ms REAL;
ALTER TABLE latency ADD COLUMN ratio REAL;
ALTER TABLE latency ADD COLUMN canary_median_ms REAL;
ALTER TABLE latency ADD COLUMN canary_id INTEGER REFERENCES canaries(id);
ALTER TABLE latency ADD COLUMN calibrated INTEGER NOT NULL DEFAULT 0;
UPDATE latency SET latency_ms = median_ms;
"""

_MIGRATIONS = {1: _MIGRATE_1_2}  # from version v to v + 1

# layer_latency row that holds the fixed part (stem + head, no searchable layer)
OVERHEAD_LAYER, OVERHEAD_OP = -1, "__stem_head__"

STAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms", "runs", "warmup")
ROW_COLUMNS = ("space", "arch", "batch", "resolution", "precision", "ep", "ep_used", "fallback", "status",
               "error", *STAT_COLUMNS, "flops", "params", "build_ms", "export_ms", "session_ms",
               "first_run_ms", "timed_total_ms", "engine_build_ms", "extra", "latency_ms", "ratio",
               "canary_median_ms", "canary_id", "calibrated")


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
    calibrated: int = 0  # rows measured against a canary (the rest are plain/imported)

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
            if version > SCHEMA_VERSION:
                raise DataError(f"{str(self.path)!r} was written by a newer hwnas (latency-store schema {version}; "
                                f"this hwnas reads up to {SCHEMA_VERSION}); upgrade hwnas or use a new --db file. "
                                "Nothing was changed")
            if version not in _MIGRATIONS and version != SCHEMA_VERSION:
                raise DataError(f"{str(self.path)!r} has latency-store schema version {version}, this hwnas "
                                f"reads version {SCHEMA_VERSION}; use a matching hwnas or a new --db file")
            check = c.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise DataError(f"{str(self.path)!r} is corrupt (SQLite quick_check: {check}); refusing to use it")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")  # durable against process death in WAL mode
        c.execute("PRAGMA foreign_keys=ON")
        if not tables:  # one transaction: a half-made schema is never left behind
            c.executescript("BEGIN IMMEDIATE;" + _CANARIES + _SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};"
                            f"PRAGMA application_id={_APP_ID};COMMIT;")
        elif version != SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring an older store to ``SCHEMA_VERSION`` in one transaction (all or nothing)."""
        script = "".join(_MIGRATIONS[v] for v in range(version, SCHEMA_VERSION))
        try:
            self.conn.executescript("BEGIN IMMEDIATE;" + script + f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        except sqlite3.Error as e:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise DataError(f"could not migrate {str(self.path)!r} from schema {version} to {SCHEMA_VERSION}: {e}; "
                            "the file is unchanged") from e
        logger.warning("migrated %s from latency-store schema %d to %d: its %d rows are marked uncalibrated "
                       "(measured without a canary)", self.path, version, SCHEMA_VERSION,
                       self.conn.execute("SELECT COUNT(*) FROM latency").fetchone()[0])

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
            for space, status, n, lo, hi, cal in self.conn.execute(
                    "SELECT space, status, COUNT(*), MIN(latency_ms), MAX(latency_ms), SUM(calibrated) FROM latency "
                    "WHERE device_id=? GROUP BY space, status", (dev,)):
                d = counts.setdefault(space, {"ok": 0, "error": 0, "min_ms": None, "max_ms": None, "calibrated": 0})
                d[status] = n
                if status == "ok":
                    d["min_ms"], d["max_ms"], d["calibrated"] = lo, hi, int(cal or 0)
                    d["speed_factor"] = self.speed_summary(dev, space)
            layers = self.conn.execute("SELECT COUNT(*) FROM layer_latency WHERE device_id=?", (dev,)).fetchone()[0]
            summary = {k: fp.get(k) for k in ("cpu_model", "gpu_name", "ort_version", "ep", "threads",
                                               "batch_size", "precision", "protocol", "imported", "source")
                       if fp.get(k) is not None}
            out.append({"id": dev, "name": name, "fingerprint": summary, "spaces": counts, "layer_rows": layers,
                        "lacks": missing_identity(fp), "canaries": self.canaries(dev)})
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
            if values["latency_ms"] is None:  # plain or imported: the row means its own median
                values["latency_ms"] = values["median_ms"]
            for k in ("latency_ms", "median_ms"):
                v = values[k]
                if v is None or not math.isfinite(v) or v <= 0:
                    raise DataError(f"latency row for {values['arch']} has {k}={v!r}; must be finite and > 0")
        values["calibrated"] = int(bool(values["calibrated"]))
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
        sql = ("SELECT arch, latency_ms, batch, resolution, precision, COALESCE(ep_used, ep), calibrated, canary_id "
               "FROM latency WHERE space=? AND device_id=? AND status='ok'")
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
        fp = self.fingerprint(dev)
        canary_ids = {r[7] for r in rows if r[6]}
        if len(canary_ids) == 1:  # the scale of the data travels with it (predictor, CSV)
            fp["canary"] = self.canary_by_id(canary_ids.pop())
        return LatencyDataset(space=space, archs=tuple(archs),
                              latency_ms=np.asarray([r[1] for r in rows], dtype=np.float64),
                              device_id=dev, fingerprint=fp, calibrated=sum(bool(r[6]) for r in rows))

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

    # -- canaries ----------------------------------------------------------------
    def canary(self, device_id: str, space: str, resolution: int, batch: int) -> dict | None:
        """The stored canary of this context (arch, sha256, reference_ms, ...), or None."""
        row = self.conn.execute("SELECT id FROM canaries WHERE device_id=? AND space=? AND resolution=? AND batch=?",
                                (device_id, space, int(resolution), int(batch))).fetchone()
        return None if row is None else self.canary_by_id(row[0])

    def canary_by_id(self, canary_id: int) -> dict:
        cur = self.conn.execute("SELECT * FROM canaries WHERE id=?", (canary_id,))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is None:
            raise DataError(f"no canary {canary_id} in {str(self.path)!r}")
        d = dict(zip(names, row))
        d["calibration"], d["history"] = json.loads(d["calibration"]), json.loads(d["history"])
        return d

    def canaries(self, device_id: str | None = None) -> list[dict]:
        sql, args = "SELECT id FROM canaries", ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id=?", (device_id,)
        return [self.canary_by_id(r[0]) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def add_canary(self, device_id: str, canary, reference) -> dict:
        """Store the canary and its reference for a context that has none yet.  A stored
        reference is never replaced here (``recalibrate_canary`` does that, on request)."""
        with self.transaction():
            have = self.canary(device_id, canary.space, canary.resolution, canary.batch_size)
            if have is not None:
                raise DataError(f"device {device_id} already has a canary for {canary.space} at "
                                f"{canary.resolution}px batch {canary.batch_size} ({have['arch']}); "
                                "use 'hwnas data recalibrate' to replace its reference")
            self.conn.execute(
                "INSERT INTO canaries (device_id, space, resolution, batch, arch, sha256, reference_ms, calibration, "
                "created) VALUES (?,?,?,?,?,?,?,?,?)",
                (device_id, canary.space, canary.resolution, canary.batch_size, canary.arch, canary.sha256,
                 reference.reference_ms, json.dumps(reference.to_dict()), _now()))
        return self.canary(device_id, canary.space, canary.resolution, canary.batch_size)

    def recalibrate_canary(self, canary_id: int, reference) -> int:
        """Replace a canary's reference (and state constant), keep the old one in its
        history, and recompute its calibrated rows from their stored ratios and canary
        medians (``contention.calibrated_ms``; raw numbers untouched); rows rescaled."""
        from hwnas.profiling.contention import calibrated_ms

        old = self.canary_by_id(canary_id)
        history = [*old["history"], {**old["calibration"], "replaced": _now()}]
        cal = reference.to_dict()
        ref, gamma = reference.reference_ms, cal.get("gamma")
        with self.transaction():
            self.conn.execute("UPDATE canaries SET reference_ms=?, calibration=?, history=? WHERE id=?",
                              (ref, json.dumps(cal), json.dumps(history), canary_id))
            rows = self.conn.execute("SELECT id, ratio, canary_median_ms FROM latency WHERE canary_id=? "
                                     "AND calibrated=1", (canary_id,)).fetchall()
            self.conn.executemany("UPDATE latency SET latency_ms=? WHERE id=?",
                                  [(calibrated_ms(r, c, ref, gamma), i) for i, r, c in rows])
        return len(rows)

    def speed_series(self, device_id: str, space: str | None = None) -> list[tuple[str, float]]:
        """(created, canary median / reference) of every calibrated row, in order: the
        machine's speed factor at the moment each arch was measured (1 = as calibrated)."""
        sql = ("SELECT l.created, l.canary_median_ms / c.reference_ms FROM latency l JOIN canaries c "
               "ON c.id = l.canary_id WHERE l.device_id=? AND l.calibrated=1 AND l.status='ok'")
        args = [device_id]
        if space is not None:
            sql += " AND l.space=?"
            args.append(space)
        return [(t, float(f)) for t, f in self.conn.execute(sql + " ORDER BY l.id", args)]

    def speed_summary(self, device_id: str, space: str | None = None) -> dict | None:
        f = [x for _, x in self.speed_series(device_id, space)]
        if not f:
            return None
        return {"min": float(np.min(f)), "median": float(np.median(f)), "max": float(np.max(f)), "rows": len(f)}

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
