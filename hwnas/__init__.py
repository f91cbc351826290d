"""hwnas: hardware-aware neural architecture search, measured not guessed."""
__version__ = "0.1.0"

from hwnas.errors import HwnasError  # noqa: E402

__all__ = ["HwnasError", "__version__"]
