"""``hwnas search``'s command line: its help names every registered method, and the generic
``--strategy-param`` / ``--sampler-param`` reach the strategy and the sampler (or fail in one line)."""
from __future__ import annotations

import json

import pytest

from hwnas.cli.main import main
from hwnas.search import list_strategies, list_train_samplers


def _help(capsys) -> str:
    from tests.cli_exit import cli_exit_code

    assert cli_exit_code(["search", "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_names_every_registered_strategy_and_sampler(capsys):
    text = _help(capsys)
    missing = [n for n in list_strategies() if n not in text]
    assert not missing, f"--strategy help does not mention {missing}"
    samplers = text.split("--train-sampler", 1)[1].split()[0]
    assert set(samplers.split("|")) == set(list_train_samplers())


def test_key_value_params_reach_the_run(tmp_path, micro_space):
    out = tmp_path / "run"
    main(["search", "--space", "micro", "--strategy", "pinas", "--sampler-param", "momentum=0.5",
          "--sampler-param", "consistency_weight=0", "--strategy-param", "population=4",
          "--strategy-param", "mutations=2", "--strategy-param", "crossovers=2", "--search-stage-steps", "1",
          "--epochs", "2", "--limit", "120", "--batch-size", "32", "--out", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train_sampler_params"] == {"momentum": 0.5, "consistency_weight": 0}
    assert cfg["strategy_params"] == {"population": 4, "mutations": 2, "crossovers": 2}


@pytest.mark.parametrize("args,match", [
    (["--sampler-param", "momentum"], "takes KEY=VALUE"),
    (["--strategy", "pinas", "--sampler-param", "momentum=1.5"], "momentum"),
    (["--strategy", "dmasking", "--strategy-param", "nope=1"], "bad parameters for strategy 'dmasking'"),
])
def test_bad_key_value_params_are_one_line_errors_before_any_file(tmp_path, capsys, args, match):
    with pytest.raises(SystemExit) as e:
        main(["search", *args, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "x").exists()
