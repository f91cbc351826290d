"""Export / import of latency data, and clear errors for bad imported rows."""
from __future__ import annotations

import csv
import json

import pytest

from hwnas.errors import DataError
from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.store import LatencyStore
from hwnas.profiling.transfer import export_rows, import_csv, write_csv, write_parquet


@pytest.fixture(scope="module")
def measured(tmp_path_factory, micro_space):
    p = tmp_path_factory.mktemp("m") / "src.db"
    with LatencyStore(p) as s:
        run_campaign(s, CampaignConfig(space="micro", num_archs=5, warmup=1, runs=3, calibration_sessions=2,
                                          calibration_gap_s=0.0))
    return p


def test_csv_round_trip_keeps_latencies_and_extras(measured, tmp_path):
    with LatencyStore(measured) as s:
        src = s.dataset("micro")
        rows = export_rows(s, "micro")
    out = tmp_path / "lat.csv"
    write_csv(rows, out)
    with LatencyStore(tmp_path / "dst.db") as d:
        dev, added = import_csv(d, "micro", out, "lab-board")
        assert added == 5
        ds = d.dataset("micro", device="lab-board")
        assert ds.archs == src.archs and ds.latency_ms.tolist() == src.latency_ms.tolist()
        assert ds.device_id == dev and ds.fingerprint["name"] == "lab-board"
        extra = json.loads(d.rows("micro")[0]["extra"])
        assert extra["device_id"] == src.device_id  # unknown columns are kept
        assert d.rows("micro")[0]["std_ms"] is not None  # known stat columns land in their fields
        _, again = import_csv(d, "micro", out, "lab-board")
        assert again == 0  # idempotent


def test_parquet_export(measured, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    with LatencyStore(measured) as s:
        rows = export_rows(s, "micro")
    write_parquet(rows, tmp_path / "lat.parquet")
    t = pq.read_table(tmp_path / "lat.parquet")
    assert t.num_rows == 5 and t.column("latency_ms").to_pylist() == [r["latency_ms"] for r in rows]


@pytest.mark.parametrize("arch_ok,latency,match", [
    (True, "nan", "line 3: latency_ms must be finite and > 0"),
    (True, "-1", "line 3: latency_ms must be finite and > 0"),
    (True, "0", "line 3: latency_ms must be finite and > 0"),
    (True, "fast", "line 3: latency_ms 'fast' is not a number"),
    (False, "1.0", "line 3: bad arch for space 'micro'"),
])
def test_bad_rows_are_named_and_nothing_is_written(micro_space, tmp_path, arch_ok, latency, match):
    good = [str(micro_space.sample(i)) for i in range(2)]
    p = tmp_path / "in.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms", "board"])
        w.writerow([good[0], "1.5", "x"])
        w.writerow([good[1] if arch_ok else "k9_e9-skip", latency, "x"])
    with LatencyStore(tmp_path / "d.db") as d:
        with pytest.raises(DataError, match=match):
            import_csv(d, "micro", p, "lab")
        assert d.rows() == [] and d.devices() == []


def test_missing_columns_and_duplicates(micro_space, tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("arch,ms\nx,1\n")
    with LatencyStore(tmp_path / "d.db") as d:
        with pytest.raises(DataError, match="lacks column.*latency_ms.*it has: arch, ms"):
            import_csv(d, "micro", p, "lab")
        a = str(micro_space.sample(0))
        p.write_text(f"arch,latency_ms\n{a},1\n{a},2\n")
        with pytest.raises(DataError, match="line 3: duplicate of in.csv line 2"):
            import_csv(d, "micro", p, "lab")
