"""``SearchSpace`` and ``Arch``: what can be built, and one choice of it.

A space is a macro skeleton (stem, stages of layers, head) plus a list of *decisions*.
Each decision picks one token from its choices: one decision per searchable layer (an op
name, see ``_ops``) and, where the input resolution is searchable, one more decision in
front named ``resolution`` (tokens ``r224``...).  Strategies, encodings and
distributions only see decisions; the network builder and the cost model see layers.

Every choice carries its named *dimensions* (kernel, expansion, width, se, block,
splits, skip, resolution).  A choice holds only the dimensions that apply to it: a
``skip`` choice has ``skip=yes`` and nothing else, an MBConv choice has no ``splits``.
Because each layer's choice set is the full conditional product of its dimensions,
``P(choice) = prod over the choice's dimensions of P(dim = value)`` is a normalised
distribution: that is the factorized distribution of FP-NAS's coarse stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwnas.errors import ArchError, valid_list
from hwnas.space._ops import Op

RESOLUTION = "resolution"


@dataclass(frozen=True)
class Arch:
    """An immutable architecture: one token per decision of its space.

    ``str(arch)`` is canonical (tokens joined by ``-``) and ``space.parse(str(arch))``
    gives back an equal ``Arch``; equal archs hash equal.
    """

    space: str
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return "-".join(self.tokens)


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a space (a layer's op, or the input resolution)."""

    name: str
    choices: tuple[str, ...]
    dims: tuple[tuple[tuple[str, object], ...], ...]  # per choice: ((dim, value), ...)

    def index(self, token: str) -> int:
        try:
            return self.choices.index(token)
        except ValueError:
            raise ArchError(
                f"{self.name}: {token!r} is not a valid choice; valid: {valid_list(self.choices)}"
            ) from None

    def dim_values(self) -> dict[str, tuple]:
        """Ordered distinct values of each named dimension over this decision's choices."""
        out: dict[str, list] = {}
        for pairs in self.dims:
            for dim, value in pairs:
                if value not in out.setdefault(dim, []):
                    out[dim].append(value)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Layer:
    """A searchable layer slot of the macro skeleton."""

    stage: int
    channels: int  # the stage's output channels at width 1.0
    stride: int
    first_in_stage: bool
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Stem:
    channels: int
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class SearchSpace:
    """A search space: macro skeleton plus decisions.  See the module docstring."""

    name: str
    layers: tuple[Layer, ...]
    stem: Stem
    resolutions: tuple[int, ...]
    searchable_resolution: bool = False
    head_channels: int = 0  # 0: no 1x1 conv before the pool
    num_classes: int = 1000
    in_channels: int = 3
    description: str = ""
    factorized: bool = False
    decisions: tuple[Decision, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        decisions = []
        if self.searchable_resolution:
            decisions.append(
                Decision(
                    RESOLUTION,
                    tuple(f"r{r}" for r in self.resolutions),
                    tuple(((RESOLUTION, r),) for r in self.resolutions),
                )
            )
        for i, layer in enumerate(self.layers):
            decisions.append(
                Decision(
                    f"layer{i}",
                    tuple(op.name for op in layer.ops),
                    tuple(op_dims(op, self.factorized) for op in layer.ops),
                )
            )
        object.__setattr__(self, "decisions", tuple(decisions))

    # -- size and sampling -------------------------------------------------
    @property
    def default_resolution(self) -> int:
        return self.resolutions[0]

    def size(self) -> int:
        """Exact number of distinct architectures."""
        return math.prod(len(d.choices) for d in self.decisions)

    def size_str(self) -> str:
        n = self.size()
        return f"{n} (~10^{math.log10(n):.1f})"

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        """One architecture drawn uniformly at random (seed or Generator)."""
        rng = np.random.default_rng(rng)
        return self.from_indices([int(rng.integers(len(d.choices))) for d in self.decisions])

    def from_indices(self, indices) -> Arch:
        indices = [int(i) for i in indices]
        if len(indices) != len(self.decisions):
            raise ArchError(f"{self.name}: expected {len(self.decisions)} choices, got {len(indices)}")
        tokens = []
        for d, i in zip(self.decisions, indices):
            if not 0 <= i < len(d.choices):
                raise ArchError(f"{d.name}: index {i} out of range 0..{len(d.choices) - 1}")
            tokens.append(d.choices[i])
        return Arch(self.name, tuple(tokens))

    def indices(self, arch: Arch) -> tuple[int, ...]:
        self._check_space(arch)
        return tuple(d.index(t) for d, t in zip(self.decisions, arch.tokens))

    # -- parsing -----------------------------------------------------------
    def parse(self, text: str | Arch) -> Arch:
        """Canonical string -> ``Arch``; a clear ``ArchError`` for anything else."""
        if isinstance(text, Arch):
            self._check_space(text)
            return text
        tokens = tuple(str(text).strip().split("-"))
        if len(tokens) != len(self.decisions):
            raise ArchError(
                f"arch string for space {self.name!r} must have {len(self.decisions)} tokens "
                f"joined by '-', got {len(tokens)}: {str(text)[:80]!r}"
            )
        for d, t in zip(self.decisions, tokens):
            d.index(t)
        return Arch(self.name, tokens)

    def _check_space(self, arch: Arch) -> None:
        if arch.space != self.name:
            raise ArchError(f"arch belongs to space {arch.space!r}, not {self.name!r}")

    # -- views used by the builder and the cost model ---------------------
    def layer_ops(self, arch: Arch) -> tuple[Op, ...]:
        idx = self.indices(arch)[1 if self.searchable_resolution else 0:]
        return tuple(layer.ops[i] for layer, i in zip(self.layers, idx))

    def resolution(self, arch: Arch | None = None, resolution: int | None = None) -> int:
        """The input resolution of ``arch``: its own if searchable, else the one asked for."""
        if self.searchable_resolution and arch is not None:
            own = int(arch.tokens[0][1:])
            if resolution is not None and resolution != own:
                raise ArchError(f"arch {arch} fixes resolution {own}; got resolution={resolution}")
            return own
        res = self.default_resolution if resolution is None else int(resolution)
        if res not in self.resolutions:
            raise ArchError(
                f"resolution {res} is not allowed by space {self.name!r}; valid: {valid_list(self.resolutions)}"
            )
        return res


def op_dims(op: Op, factorized: bool) -> tuple[tuple[str, object], ...]:
    """The named dimensions that apply to ``op`` (see the module docstring)."""
    if not factorized:
        return (("op", op.name),)
    if op.skip:
        return (("skip", "yes"),)
    dims = [("skip", "no"), ("kernel", op.kernel), ("expansion", op.expansion)]
    dims += [("groups", op.groups), ("width", op.width), ("se", op.se)]
    dims.append(("block", op.block))
    if op.radix:
        dims.append(("splits", op.radix))
    return tuple(dims)
