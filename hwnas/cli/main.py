"""Entry point of the ``hwnas`` command: a thin click group with lazy sub-commands.

Why lazy: ``hwnas --help`` and ``hwnas space show`` should not pay for importing torch,
ONNX Runtime and XGBoost.  Each sub-command lives in its own module under ``hwnas.cli``
and is listed once in ``_COMMANDS``.

Every ``HwnasError`` becomes one line on stderr and exit code 2 (``--debug`` keeps the
traceback); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from hwnas import __version__
from hwnas.errors import HwnasError

# name -> "module:attribute" of a click command or group
_COMMANDS = {
    "demo": "hwnas.cli.demo_cmd:demo",
    "space": "hwnas.cli.space_cmd:space",
    "search": "hwnas.cli.search_cmd:search",
    "profile": "hwnas.cli.profile_cmd:profile",
    "data": "hwnas.cli.data_cmd:data",
    "predictor": "hwnas.cli.predictor_cmd:predictor",
    "export": "hwnas.cli.export_cmd:export",
    "evaluate": "hwnas.cli.export_cmd:evaluate",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hwnas")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx, debug, verbose):
    """hwnas: hardware-aware neural architecture search.

    \b
    Pipeline (each step is a command):
      hwnas profile    measure real latencies of sampled archs with ONNX Runtime
      hwnas predictor  learn arch -> latency from those measurements
      hwnas search     FP-NAS search under a latency or FLOPs budget
      hwnas export     train the chosen arch and ship a verified ONNX model
      hwnas demo       all of the above on the embedded defaults (CPU, minutes)
    """
    ctx.obj = {"debug": debug}
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _is_main_rank() -> bool:
    """Rank 0 of a torchrun launch, or a plain process."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def main(argv=None) -> None:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as e:
        if debug:
            raise
        if not getattr(e, "shared", False) or _is_main_rank():  # a shared error: every rank has it, rank 0 says it
            click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
