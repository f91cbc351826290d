"""The ``hwnas`` command (see ``hwnas.cli.main``)."""
from hwnas.cli.main import main

__all__ = ["main"]
