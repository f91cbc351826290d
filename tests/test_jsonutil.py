"""hwnas.jsonutil: the one JSON writer must turn NaN into null and numpy/dataclasses into plain JSON."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hwnas import jsonutil


@dataclasses.dataclass
class _Row:
    name: str
    value: float


def test_to_jsonable_converts_numpy_dataclasses_paths_and_non_finite():
    obj = {"a": np.float32(1.5), "b": np.int64(3), "c": (1, 2), "d": _Row("x", float("nan")),
           "e": np.array([1.0, np.inf]), "f": Path("runs/x"), 7: np.bool_(True)}
    text = jsonutil.dumps(obj)
    assert json.loads(text) == {"a": 1.5, "b": 3, "c": [1, 2], "d": {"name": "x", "value": None},
                                "e": [1.0, None], "f": "runs/x", "7": True}
    assert "NaN" not in text and "Infinity" not in text


def test_unknown_objects_are_refused_not_stringified():
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        jsonutil.to_jsonable({"x": object()})


def test_plain_values_pass_through():
    assert jsonutil.to_jsonable([None, "s", 0, -2.5, False]) == [None, "s", 0, -2.5, False]
    assert math.isfinite(jsonutil.to_jsonable(1e308))
