"""Build a ``SearchSpace`` from a YAML/dict definition (``data/spaces/*.yaml``).

Why a file format: users bring their own spaces without writing code, and the built-in
spaces are described the same way, so the loader is tested by every built-in.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from hwnas.errors import SpaceError, valid_list
from hwnas.space._ops import SKIP, Op, parse_op
from hwnas.space._space import Layer, SearchSpace, Stem

_TOP_KEYS = {
    "name", "description", "resolutions", "searchable_resolution", "num_classes",
    "in_channels", "stem", "stages", "head", "ops", "factorized",
}
_FACTOR_KEYS = {"kernel", "expansion", "groups", "width", "se", "block", "splits", "skip"}
_BLOCKS = ("mb", "sa")


def load_space_file(path: str | Path) -> SearchSpace:
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpaceError(f"cannot read space file {str(path)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SpaceError(f"space file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise SpaceError(f"space file {str(path)!r} must hold a mapping, got {type(spec).__name__}")
    spec.setdefault("name", path.stem)
    return space_from_dict(spec, source=str(path))


def space_from_dict(spec: dict, source: str = "<dict>") -> SearchSpace:
    where = f"space {spec.get('name', '?')!r} ({source})"
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown keys {sorted(unknown)}; valid: {valid_list(sorted(_TOP_KEYS))}")
    for key in ("name", "stem", "stages", "resolutions"):
        if key not in spec:
            raise SpaceError(f"{where}: missing required key {key!r}")
    if ("ops" in spec) == ("factorized" in spec):
        raise SpaceError(f"{where}: give exactly one of 'ops' (a list of op names) or 'factorized'")
    resolutions = _int_list(spec["resolutions"], "resolutions", where)
    factorized = "factorized" in spec
    if factorized:
        ops, skip = _factorized_ops(spec["factorized"], where)
    else:
        ops, skip = _listed_ops(spec["ops"], where), None
    layers = []
    stages = spec["stages"]
    if not isinstance(stages, list) or not stages:
        raise SpaceError(f"{where}: 'stages' must be a non-empty list of {{channels, layers, stride}}")
    for s, stage in enumerate(stages):
        try:
            channels, n, stride = int(stage["channels"]), int(stage["layers"]), int(stage["stride"])
        except (KeyError, TypeError, ValueError):
            raise SpaceError(f"{where}: stage {s} must have integer channels, layers, stride; got {stage!r}") from None
        if channels < 1 or n < 1 or stride not in (1, 2):
            raise SpaceError(f"{where}: stage {s} needs channels >= 1, layers >= 1, stride 1 or 2; got {stage!r}")
        for j in range(n):
            layer_ops = ops + ((SKIP,) if skip and j > 0 else ())
            layers.append(Layer(s, channels, stride if j == 0 else 1, j == 0, layer_ops))
    stem = spec["stem"]
    try:
        stem = Stem(int(stem["channels"]), int(stem.get("kernel", 3)), int(stem.get("stride", 2)))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise SpaceError(f"{where}: 'stem' must be {{channels, kernel, stride}}, got {spec['stem']!r}") from None
    head = spec.get("head") or {}
    return SearchSpace(
        name=str(spec["name"]),
        layers=tuple(layers),
        stem=stem,
        resolutions=resolutions,
        searchable_resolution=bool(spec.get("searchable_resolution", False)),
        head_channels=int(head.get("channels", 0)),
        num_classes=int(spec.get("num_classes", 1000)),
        in_channels=int(spec.get("in_channels", 3)),
        description=str(spec.get("description", "")).strip(),
        factorized=factorized,
    )


def _int_list(values, key: str, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise SpaceError(f"{where}: {key!r} must be a non-empty list, got {values!r}")
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise SpaceError(f"{where}: {key!r} must hold integers, got {values!r}") from None
    if len(set(out)) != len(out) or min(out) < 1:
        raise SpaceError(f"{where}: {key!r} must hold distinct positive integers, got {values!r}")
    return out


def _listed_ops(names, where: str) -> tuple[Op, ...]:
    if not isinstance(names, list) or not names:
        raise SpaceError(f"{where}: 'ops' must be a non-empty list of op names")
    try:
        ops = tuple(parse_op(str(n)) for n in names)
    except SpaceError as e:
        raise SpaceError(f"{where}: {e}") from None
    if len(set(ops)) != len(ops):
        raise SpaceError(f"{where}: 'ops' lists an op twice: {names}")
    return ops


def _factorized_ops(fac, where: str) -> tuple[tuple[Op, ...], bool]:
    """The full conditional product of the dimensions (see ``_space``)."""
    if not isinstance(fac, dict):
        raise SpaceError(f"{where}: 'factorized' must be a mapping of dimension -> list of values")
    unknown = set(fac) - _FACTOR_KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown dimensions {sorted(unknown)}; valid: {valid_list(sorted(_FACTOR_KEYS))}")

    def values(key, default):
        v = fac.get(key, default)
        if not isinstance(v, list) or not v:
            raise SpaceError(f"{where}: dimension {key!r} needs a non-empty list of values, got {v!r}")
        return v

    blocks = values("block", ["mb"])
    bad = [b for b in blocks if b not in _BLOCKS]
    if bad:
        raise SpaceError(f"{where}: unknown block {bad[0]!r}; valid: {valid_list(_BLOCKS)}")
    splits = values("splits", [1]) if "sa" in blocks else [0]
    variants = [0] * ("mb" in blocks) + ([int(r) for r in splits] if "sa" in blocks else [])
    ops = []
    try:
        for k, e, g, w, se, radix in itertools.product(
            values("kernel", [3]), values("expansion", [1]), values("groups", [1]),
            values("width", [1.0]), values("se", [False]), variants,
        ):
            ops.append(parse_op(Op(int(k), float(e), int(g), float(w), bool(se), radix).name))
    except (TypeError, ValueError) as err:
        raise SpaceError(f"{where}: bad dimension value: {err}") from None
    except SpaceError as err:
        raise SpaceError(f"{where}: {err}") from None
    skip = fac.get("skip", False)
    if not isinstance(skip, bool):
        raise SpaceError(f"{where}: 'skip' must be true or false, got {skip!r}")
    return tuple(ops), skip
