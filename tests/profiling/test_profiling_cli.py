"""``hwnas profile`` and ``hwnas data`` end to end, in-process (the micro space is visible)."""
from __future__ import annotations

import json
import sys

import pytest

from hwnas.cli.main import main


CALIB = ("--calibration-sessions", "2", "--calibration-gap", "0")


def _run(capsys, *args):
    main(list(args))
    return capsys.readouterr().out


def test_profile_show_export_import(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    out = json.loads(_run(capsys, "profile", "--space", "micro", "-n", "3", "--db", str(db), "--warmup", "1",
                          "--runs", "3", "--layers", *CALIB, "--json"))
    assert out["measured"] == 3 and out["errors"] == 0 and out["layer_rows_written"] > 0
    assert 0 < out["min_ms"] <= out["max_ms"] and out["protocol"] == "canary" and out["canary_reference_ms"] > 0
    if sys.platform.startswith("linux"):  # /proc/stat
        assert 0 <= out["cpu_steal_share"] < 1
    show = json.loads(_run(capsys, "data", "show", "--db", str(db), "--json"))
    (dev,) = show["devices"]
    assert dev["spaces"]["micro"]["ok"] == 3 and dev["layer_rows"] == out["layer_rows_written"]
    assert dev["spaces"]["micro"]["calibrated"] == 3 and dev["lacks"] == []
    sf = dev["spaces"]["micro"]["speed_factor"]
    assert 0 < sf["min"] <= sf["median"] <= sf["max"] and sf["rows"] == 3
    table = _run(capsys, "data", "show", "--db", str(db))
    assert "canary of" in table and "reference" in table
    csv_path = tmp_path / "lat.csv"
    _run(capsys, "data", "export", "--db", str(db), "--csv", str(csv_path))
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("# fingerprint ") and len(lines) == 5  # fingerprint, header, 3 rows
    from hwnas.predictors import read_latency_csv
    from hwnas.space import get_space

    data = read_latency_csv(csv_path, get_space("micro"))
    assert data.fingerprint["canary"]["reference_ms"] == pytest.approx(out["canary_reference_ms"])
    db2 = tmp_path / "other.db"
    imp = json.loads(_run(capsys, "data", "import", "--db", str(db2), "--space", "micro", "--csv", str(csv_path),
                          "--device", "board-7", "--json"))
    assert imp["added"] == 3
    (dev2,) = json.loads(_run(capsys, "data", "show", "--db", str(db2), "--json"))["devices"]
    assert dev2["spaces"]["micro"]["calibrated"] == 0 and dev2["lacks"]  # imported: uncalibrated here
    png = tmp_path / "drift.png"
    drift = json.loads(_run(capsys, "data", "drift", "--db", str(db), "--png", str(png), "--json"))
    assert drift["devices"][0]["rows"] == 3 and png.stat().st_size > 1000
    rec = json.loads(_run(capsys, "data", "recalibrate", "--db", str(db), "--sessions", "2", "--json"))
    (r,) = rec["recalibrated"]
    assert r["rows_rescaled"] == 3 and r["new_reference_ms"] > 0


def test_canary_bad_input_is_one_line_and_changes_nothing(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    _run(capsys, "profile", "--space", "micro", "-n", "2", "--db", str(db), "--warmup", "1", "--runs", "3", *CALIB,
         "--json")
    before = db.read_bytes()
    for args, msg in ((["--canary", "k9_e9"], "is not an arch of space 'micro'"),
                      (["--canary", "k5_e3-k5_e3-k5_e3", "--no-canary"], "contradict each other")):
        with pytest.raises(SystemExit) as e:
            main(["profile", "--space", "micro", "-n", "1", "--db", str(db), *CALIB, *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and err.count("\n") == 1, err
    from hwnas.profiling.store import LatencyStore

    with LatencyStore(db) as s:
        assert len(s.rows()) == 2 and len(s.canaries()) == 1
    with pytest.raises(SystemExit) as e:
        main(["data", "drift", "--db", str(tmp_path / "none.db")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    assert len(before) > 0


def test_user_errors_are_one_line_exit_2(micro_space, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["profile", "--space", "micro", "-n", "1", "--db", str(tmp_path / "missing" / "x.db")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: directory of the database does not exist") and err.count("\n") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(f"arch,latency_ms\n{micro_space.sample(0)},-3\n")
    with pytest.raises(SystemExit) as e:
        main(["data", "import", "--db", str(tmp_path / "d.db"), "--space", "micro", "--csv", str(bad),
              "--device", "x"])
    assert e.value.code == 2 and "bad.csv line 2: latency_ms must be finite and > 0" in capsys.readouterr().err
