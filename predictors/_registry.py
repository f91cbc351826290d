"""Predictor registry (timm / torchvision style): register, create, list; duplicates refused."""
from __future__ import annotations

from hwnas.errors import PredictorError, RegistryError, valid_list

_REGISTRY: dict[str, type] = {}


def register_predictor(name: str, cls: type | None = None):
    """Register a ``Predictor`` subclass under ``name`` (usable as a class decorator)."""

    def deco(klass):
        if name in _REGISTRY:
            raise RegistryError(f"a predictor named {name!r} is already registered "
                                f"({_REGISTRY[name].__name__})")
        klass.name = name
        _REGISTRY[name] = klass
        return klass

    return deco(cls) if cls is not None else deco


def unregister_predictor(name: str) -> None:
    _REGISTRY.pop(name, None)


def list_predictors() -> list[str]:
    return sorted(_REGISTRY)


def predictor_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(f"unknown predictor {name!r}; valid: {valid_list(list_predictors())}") from None


def create_predictor(name: str, space, **params):
    """A new, unfitted predictor; unknown parameters are an error, not silently ignored."""
    cls = predictor_class(name)
    valid = cls.param_names()
    bad = sorted(set(params) - set(valid))
    if bad:
        raise PredictorError(f"predictor {name!r} has no parameter(s) {valid_list(bad)}; valid: {valid_list(valid)}")
    return cls(space, **params)

