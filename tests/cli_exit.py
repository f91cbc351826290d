"""Run the ``hwnas`` CLI in-process and return its exit code, as the shell would see it:
click ends every command with ``SystemExit`` (0, 2 for usage/bad input, 130 interrupted)."""
from __future__ import annotations

from hwnas.cli.main import main


def cli_exit_code(args) -> int:
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0
