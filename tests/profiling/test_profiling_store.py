"""SQLite store: bad files are refused untouched, rows are unique, errors are rows."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from hwnas.errors import DataError
from hwnas.profiling.fingerprint import device_fingerprint
from hwnas.profiling.store import SCHEMA_VERSION, LatencyStore


def _row(arch, ms=1.0, **kw):
    return {"space": "tiny", "arch": arch, "batch": 1, "resolution": 32, "precision": "fp32", "ep": "cpu",
            "status": "ok", "median_ms": ms, **kw}


def test_new_store_is_wal_and_versioned(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_other_schema_version_is_refused_untouched(tmp_path):
    p = tmp_path / "old.db"
    s = LatencyStore(p)
    s.add_row(s.add_device(device_fingerprint()), _row("a"))
    s.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    before = p.read_bytes()
    with pytest.raises(DataError, match=f"newer hwnas .*schema {SCHEMA_VERSION + 1}.*reads up to {SCHEMA_VERSION}"):
        LatencyStore(p)
    assert p.read_bytes() == before


def test_corrupt_and_foreign_files_are_refused_untouched(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    before = junk.read_bytes()
    with pytest.raises(DataError, match="not an SQLite database"):
        LatencyStore(junk)
    assert junk.read_bytes() == before
    foreign = tmp_path / "foreign.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE people (name TEXT)")
    c.commit()
    c.close()
    before = foreign.read_bytes()
    with pytest.raises(DataError, match="not an hwnas latency store.*people"):
        LatencyStore(foreign)
    assert foreign.read_bytes() == before
    # a valid header with garbage pages behind it
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    with pytest.raises(DataError):
        LatencyStore(broken)


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="directory of the database does not exist"):
        LatencyStore(tmp_path / "nope" / "lat.db")
    assert not (tmp_path / "nope").exists()


def test_rows_are_unique_and_errors_are_rows(store):
    dev = store.add_device(device_fingerprint())
    assert store.add_row(dev, _row("a", 1.0))
    assert not store.add_row(dev, _row("a", 2.0))  # same key: kept the first
    assert store.add_row(dev, _row("a", 3.0, batch=2))  # other settings: another row
    assert store.add_row(dev, _row("b", None, status="error", error="RuntimeError: boom"))
    with pytest.raises(DataError, match="must be finite and > 0"):
        store.add_row(dev, _row("c", float("nan")))
    errors = store.rows("tiny", status="error")
    assert [(r["arch"], r["error"]) for r in errors] == [("b", "RuntimeError: boom")]
    assert store.measured_archs(dev, "tiny", batch=1, precision="fp32", ep="cpu") == {"a", "b"}
    with pytest.raises(DataError, match="several settings.*batch=1 resolution=32.*batch=2 resolution=32"):
        store.dataset("tiny")


def test_dataset_only_ok_rows_and_device_choice(store):
    d1 = store.add_device(device_fingerprint(threads=1))
    d2 = store.add_device(device_fingerprint(threads=2))
    store.add_row(d1, _row("a", 1.5))
    store.add_row(d1, _row("b", None, status="error", error="x"))
    store.add_row(d2, _row("a", 0.9))
    with pytest.raises(DataError, match=f"on 2 devices.*{min(d1, d2)}.*{max(d1, d2)}"):
        store.dataset("tiny")
    ds = store.dataset("tiny", device=d1)
    assert ds.archs == ("a",) and ds.latency_ms.dtype == np.float64 and ds.latency_ms.tolist() == [1.5]
    assert store.dataset("tiny", device=d2[:6]).latency_ms.tolist() == [0.9]  # id prefix works
    with pytest.raises(DataError, match="matches no device"):
        store.dataset("tiny", device="zzz")
    counts = {d["id"]: d["spaces"]["tiny"] for d in store.devices()}
    assert counts[d1]["ok"] == 1 and counts[d1]["error"] == 1


def test_reopen_keeps_rows(tmp_path):
    p = tmp_path / "lat.db"
    with LatencyStore(p) as s:
        s.add_row(s.add_device(device_fingerprint()), _row("a", 1.25))
    with LatencyStore(p, create=False) as s:
        assert s.dataset("tiny").latency_ms.tolist() == [1.25]
    with pytest.raises(DataError, match="not found"):
        LatencyStore(tmp_path / "other.db", create=False)
