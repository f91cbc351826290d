"""One registry of named plug-in classes, for strategies and for training samplers.

Why one: both are ``@register_...("name")`` class decorators over a dict (timm/torchvision
style): a duplicate name or a class of the wrong kind is refused at import, an unknown name is
an error that lists the valid ones.  Each kind keeps its own wording of that error (a
strategy's is a ``RegistryError``; a training sampler's is the config check's ``SearchError``).
"""
from __future__ import annotations

from typing import Callable

from hwnas.errors import HwnasError, RegistryError


class Registry:
    """Classes of one kind (subclasses of ``base``) by name; ``noun`` names the kind in errors
    ("strategy"); ``unknown(name, valid_names)`` is the error for a name not registered."""

    def __init__(self, noun: str, base: type, unknown: Callable[[str, list[str]], HwnasError]):
        self.noun, self.base, self.unknown = noun, base, unknown
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: register ``cls`` under ``name`` (and set ``cls.name``)."""

        def deco(cls: type) -> type:
            if name in self._classes:
                raise RegistryError(f"a {self.noun} named {name!r} is already registered")
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise RegistryError(f"{self.noun} {name!r} must be a {self.base.__name__} subclass, got {cls!r}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return deco

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        cls = self._classes.get(name)
        if cls is None:
            raise self.unknown(name, self.names())
        return cls
