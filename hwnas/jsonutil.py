"""One way to turn results into strict JSON, for every file and ``--json`` output we write.

Why: results mix numpy scalars, dataclasses, tuples and paths, and metrics can be NaN (a
Kendall tau over constant predictions).  ``json.dumps`` would either fail on them or, worse,
write ``NaN``, which is not JSON and breaks ``jq`` and JavaScript readers.  Here NaN and
infinities become ``null`` and everything else its plain JSON equivalent.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os


def to_jsonable(obj):
    """``obj`` as plain dicts, lists, str, int, float (finite) and None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and arrays
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj, **kwargs) -> str:
    """Strict JSON text of ``obj`` (see ``to_jsonable``); ``kwargs`` go to ``json.dumps``."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)
