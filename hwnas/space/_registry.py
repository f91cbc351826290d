"""Registry of search spaces: built-ins from ``data/spaces``, user files, and code.

timm / torchvision style: ``register_space`` refuses duplicates, ``get_space`` accepts a
registered name or a path to a YAML file, and unknown names list the valid ones.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from hwnas.errors import RegistryError, SpaceError, valid_list
from hwnas.space._loader import load_space_file
from hwnas.space._space import SearchSpace

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SPACES_DIR = DATA_DIR / "spaces"

_FACTORIES: dict[str, Callable[[], SearchSpace]] = {}


def register_space(name: str, factory: Callable[[], SearchSpace]) -> None:
    """Register a zero-argument factory under ``name``; duplicates are an error."""
    _builtin_names()  # make built-ins visible so a clash with one is caught
    if name in _FACTORIES:
        raise RegistryError(f"a search space named {name!r} is already registered")
    _FACTORIES[name] = factory


def unregister_space(name: str) -> None:
    _FACTORIES.pop(name, None)
    get_space.cache_clear()


@lru_cache(maxsize=None)
def _builtin_names() -> tuple[str, ...]:
    names = []
    for path in sorted(SPACES_DIR.glob("*.yaml")):
        _FACTORIES.setdefault(path.stem, lambda p=path: load_space_file(p))
        names.append(path.stem)
    return tuple(names)


def list_spaces() -> list[str]:
    _builtin_names()
    return sorted(_FACTORIES)


@lru_cache(maxsize=64)
def get_space(name_or_path: str) -> SearchSpace:
    """A space by registered name, or loaded from a ``.yaml``/``.yml`` file path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    _builtin_names()
    key = str(name_or_path)
    if key in _FACTORIES:
        space = _FACTORIES[key]()
        if space.name != key:
            raise SpaceError(f"space registered as {key!r} calls itself {space.name!r}")
        return space
    if key.endswith((".yaml", ".yml")) or Path(key).is_file():
        return load_space_file(key)
    raise SpaceError(f"unknown space {key!r}; valid: {valid_list(list_spaces())} or a path to a .yaml file")
