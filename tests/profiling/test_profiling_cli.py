"""``hwnas profile`` and ``hwnas data`` end to end, in-process (the micro space is visible)."""
from __future__ import annotations

import json

import pytest

from hwnas.cli.main import main


def _run(capsys, *args):
    main(list(args))
    return capsys.readouterr().out


def test_profile_show_export_import(micro_space, tmp_path, capsys):
    db = tmp_path / "lat.db"
    out = json.loads(_run(capsys, "profile", "--space", "micro", "-n", "3", "--db", str(db), "--warmup", "1",
                          "--runs", "3", "--layers", "--json"))
    assert out["measured"] == 3 and out["errors"] == 0 and out["layer_rows_written"] > 0
    assert 0 < out["min_ms"] <= out["max_ms"]
    show = json.loads(_run(capsys, "data", "show", "--db", str(db), "--json"))
    (dev,) = show["devices"]
    assert dev["spaces"]["micro"]["ok"] == 3 and dev["layer_rows"] == out["layer_rows_written"]
    csv_path = tmp_path / "lat.csv"
    _run(capsys, "data", "export", "--db", str(db), "--csv", str(csv_path))
    assert len(csv_path.read_text().splitlines()) == 4
    db2 = tmp_path / "other.db"
    imp = json.loads(_run(capsys, "data", "import", "--db", str(db2), "--space", "micro", "--csv", str(csv_path),
                          "--device", "board-7", "--json"))
    assert imp["added"] == 3


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
