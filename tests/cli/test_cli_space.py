"""The ``hwnas`` command: help, space inspection, JSON output and one-line errors."""
import json
import subprocess
import sys

import pytest

from hwnas.cli.main import main
from hwnas.cost import arch_cost
from hwnas.space import get_space


def run(args, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_pipeline(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for word in ("profile", "predictor", "search", "export", "space"):
        assert word in out


def test_space_show_fbnet_reports_size(capsys):
    code, out, _ = run(["space", "show", "fbnet", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["size"] == 9 ** 22 and info["size_str"].endswith("(~10^21.0)")
    assert len(info["decisions"]) == 22 and info["flops_range"][0] < info["flops_range"][1]


def test_space_show_tiny_table(capsys):
    code, out, _ = run(["space", "show", "tiny"], capsys)
    assert code == 0 and "layer5" in out and "FLOPs" in out


def test_space_show_arch_json(capsys):
    arch = str(get_space("tiny").sample(1))
    code, out, _ = run(["space", "show", "tiny", "--arch", arch, "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["arch"] == arch and len(info["layers"]) == 6
    cost = arch_cost(get_space("tiny"), arch)
    assert info["flops"] == cost.flops and info["params"] == cost.params
    # the searchable layers are only part of the network: stem and classifier add to it
    assert 0 < sum(r["flops"] for r in info["layers"]) < info["flops"]


def test_space_sample_is_seeded_and_parses(capsys):
    code, out, _ = run(["space", "sample", "tiny", "-n", "4", "--seed", "3", "--json"], capsys)
    archs = json.loads(out)
    assert code == 0 and len(archs) == 4
    assert [str(get_space("tiny").parse(a)) for a in archs] == archs
    _, again, _ = run(["space", "sample", "tiny", "-n", "4", "--seed", "3", "--json"], capsys)
    assert json.loads(again) == archs


@pytest.mark.parametrize("args, message", [
    (["space", "show", "nope"], "unknown space 'nope'; valid:"),
    (["space", "show", "tiny", "--arch", "k3_e2"], "must have 6 tokens"),
    (["space", "show", "tiny", "--arch", "skip-skip-skip-skip-skip-skip"], "valid:"),
    (["space", "show", "tiny", "--resolution", "64", "--arch",
      "k3_e2-k3_e2-k3_e2-k3_e2-k3_e2-k3_e2"], "resolution 64 is not allowed"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "hwnas.cli", "space", "list", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert {"fbnet", "fbnetv2", "tiny"} <= {r["name"] for r in json.loads(out)}
