"""``hwnas export`` / ``hwnas evaluate`` through the real command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hwnas.cli.main import cli, main

ARCH = "k3_e1_w0.5-k3_e1-skip"


def test_cli_export_then_evaluate_json(micro_space, tmp_path):
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["export", "--space", "micro", "--arch", ARCH, "--epochs", "1", "--limit", "100",
                                 "--batch-size", "40", "--train-threads", "1", "--runs", "3",
                                 "--latency-budget", "800us", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["arch"] == ARCH and d["latency_budget_ms"] == pytest.approx(0.8) and d["parity"]["passed"]
    assert d["within_budget"] == (d["measured_latency_ms"] <= 0.8) and len(d["history"]) == 1
    assert out.exists() and out.with_suffix(".json").exists()
    r = CliRunner().invoke(cli, ["evaluate", str(out), "--runs", "3", "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["accuracy"] == pytest.approx(d["accuracy"], abs=1e-6) and ev["images"] == 20


def test_cli_table_output(micro_space, tmp_path):
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["export", "--space", "micro", "--arch", ARCH, "--epochs", "0", "--limit", "60",
                                 "--runs", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "measured latency" in r.stdout and "parity (cpu)" in r.stdout and "top-1 agreement" in r.stdout
    r = CliRunner().invoke(cli, ["evaluate", str(out), "--no-latency"])
    assert r.exit_code == 0 and "accuracy (top-1)" in r.stdout


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--run", str(tmp_path), "--arch", ARCH, "--out", str(tmp_path / "m.onnx")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not both" in err and len(err.strip().splitlines()) == 1


def test_installed_command_reports_missing_result_json(tmp_path):
    exe = Path(sys.executable).parent / "hwnas"
    if not exe.exists():
        pytest.skip("the hwnas console script is not installed in this environment")
    p = subprocess.run([str(exe), "export", "--run", str(tmp_path), "--out", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "has no result.json" in p.stderr
