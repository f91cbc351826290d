"""One error hierarchy for everything a user can get wrong.

Why: the CLI turns any ``HwnasError`` into a one-line message and exit code 2, while
real bugs (anything else) keep their traceback.  Messages name what was wrong, echo the
value, and list what is valid (Optuna / scikit-learn style).
"""
from __future__ import annotations


class HwnasError(Exception):
    """Base of every user-facing hwnas error."""


class SpaceError(HwnasError):
    """An unknown space, a malformed space file, or a bad architecture string."""


class ArchError(SpaceError):
    """An architecture string or resolution that the space does not allow."""


class RegistryError(HwnasError):
    """Unknown or duplicate name in one of the registries."""


class DataError(HwnasError):
    """Bad dataset, latency file or database content."""


class ProfilingError(HwnasError):
    """A measurement or execution-provider problem."""


class PredictorError(HwnasError):
    """A predictor that is not fitted, or used for another space or device."""


class SearchError(HwnasError):
    """A budget or search configuration that cannot work."""


class TrainError(HwnasError):
    """A training configuration that cannot work, or a run that diverged."""


class ExportError(HwnasError):
    """An export that cannot run as asked (bad run folder, output path, parity failure)."""


class ClusterError(HwnasError):
    """A Ray cluster that does not answer, or lacks the resource a command asks for."""


def valid_list(values) -> str:
    """Format a collection of valid values for an error message."""
    return ", ".join(str(v) for v in values)
