"""Architecture -> feature vector, pluggable by a spec string such as ``onehot+layercost+totals``.

Components (each maps a batch of decision indices ``(N, D)`` to a float block, and a soft
encoding ``probs`` to the same block in torch so a search can differentiate through it):

- ``onehot``: one block per decision over its choices (BRP-NAS, FBNet's LUT are linear in it);
- ``factorized``: per decision, one block per named dimension (kernel, expansion, width,
  ...; ``space.decisions[i].dims``); a choice that lacks a dimension (``skip``) is all zero;
- ``layercost``: per-layer multiply-adds and memory traffic (input + output activations +
  weights) from ``hwnas.cost``, in millions: on CPUs depthwise and 1x1 layers are often
  bound by memory, not MACs, which is why nn-Meter (Zhang et al., MobiSys 2021) feeds
  both to its kernel predictors;
- ``totals``: total MFLOPs, Mparams, M activation elements, depth (non-skip layers) and
  the input resolution.

Soft encodings are exact expectations under the product distribution for every
component (see ``hwnas.cost_table``), so a one-hot ``probs`` gives exactly ``encode(arch)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.errors import ArchError, PredictorError, valid_list
from hwnas.space import Arch, SearchSpace

from hwnas.cost_table import CostTable

COMPONENTS = ("onehot", "factorized", "layercost", "totals")
DEFAULT_ENCODING = "onehot+layercost+totals"
_TOTALS = ("total_flops", "total_params", "total_act", "depth", "resolution")
_SCALE = {"flops": 1e-6, "traffic": 1e-6, "total_flops": 1e-6, "total_params": 1e-6, "total_act": 1e-6,
          "depth": 1.0, "resolution": 1.0}


def parse_encoding(spec: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in str(spec).split("+") if p.strip())
    bad = [p for p in parts if p not in COMPONENTS]
    if not parts or bad or len(set(parts)) != len(parts):
        raise PredictorError(
            f"encoding must be components joined by '+', each once, from: {valid_list(COMPONENTS)}; "
            f"got {spec!r}"
        )
    return parts


@dataclass
class Encoding:
    """Feature encoder for one space (and one input resolution where it is not searchable)."""

    space: SearchSpace
    spec: str = DEFAULT_ENCODING
    resolution: int | None = None

    def __post_init__(self):
        self.parts = parse_encoding(self.spec)
        self.table = CostTable(self.space, self.resolution)
        self._token_index = [{t: k for k, t in enumerate(d.choices)} for d in self.space.decisions]
        self._factor = [_factor_matrix(d) for d in self.space.decisions]
        self.feature_names = self._names()
        self.n_features = len(self.feature_names)

    # -- archs -> decision indices ---------------------------------------------
    def indices(self, archs) -> np.ndarray:
        """``(N, D)`` int array of choice indices; accepts Archs, strings or such an array."""
        if isinstance(archs, np.ndarray) and archs.ndim == 2:
            idx = archs.astype(np.int64, copy=False)
            self._check_index_array(idx)
            return idx
        if isinstance(archs, (str, Arch)):
            archs = [archs]
        name, maps, n_dec = self.space.name, self._token_index, len(self._token_index)
        toks = []
        for a in archs:
            if isinstance(a, Arch):
                if a.space != name:
                    raise ArchError(f"arch belongs to space {a.space!r}, not {name!r}: {a}")
                toks.append(a.tokens)
            else:
                toks.append(str(a).strip().split("-"))
        out = np.empty((len(toks), n_dec), dtype=np.int64)
        try:
            if any(len(t) != n_dec for t in toks):
                raise KeyError
            flat = [t for tt in toks for t in tt]
            for d, m in enumerate(maps):  # one C-level dict lookup per token: ~1 us per arch
                out[:, d] = np.fromiter(map(m.__getitem__, flat[d::n_dec]), dtype=np.int64, count=len(toks))
        except KeyError:
            for a in archs:  # find the first bad one and raise its precise ArchError
                self.space.parse(str(a))
            raise
        return out

    def _check_index_array(self, idx):
        sizes = np.array([len(d.choices) for d in self.space.decisions])
        if idx.shape[1] != len(sizes) or (idx < 0).any() or (idx >= sizes).any():
            raise ArchError(f"index array must be (N, {len(sizes)}) with entries below {sizes.tolist()}")

    # -- encoding ---------------------------------------------------------------
    def encode(self, archs) -> np.ndarray:
        """``(N, n_features)`` float64 features."""
        idx = self.indices(archs)
        n = len(idx)
        blocks = []
        costs = self.table.layer_costs(idx) if {"layercost", "totals"} & set(self.parts) else None
        for part in self.parts:
            if part == "onehot":
                sizes = [len(d.choices) for d in self.space.decisions]
                offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
                block = np.zeros((n, sum(sizes)))
                block[np.arange(n)[:, None], offsets[None, :] + idx] = 1.0
            elif part == "factorized":
                block = np.concatenate([m[idx[:, d]] for d, m in enumerate(self._factor)], axis=1) \
                    if self._factor else np.zeros((n, 0))
            else:
                block = _dense_block(part, costs)
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    def encode_soft(self, probs):
        """The same features for per-decision probability vectors (torch float64, 1-D)."""
        import torch

        if len(probs) != len(self.space.decisions):
            raise PredictorError(f"expected {len(self.space.decisions)} probability vectors "
                                 f"(one per decision of {self.space.name!r}), got {len(probs)}")
        probs = [torch.as_tensor(p).to(torch.float64).reshape(-1) for p in probs]
        for d, p in zip(self.space.decisions, probs):
            if p.numel() != len(d.choices):
                raise PredictorError(f"{d.name}: probability vector has {p.numel()} entries, "
                                     f"the decision has {len(d.choices)} choices")
        costs = self.table.expected_costs(probs) if {"layercost", "totals"} & set(self.parts) else None
        blocks = []
        for part in self.parts:
            if part == "onehot":
                blocks.append(torch.cat(probs))
            elif part == "factorized":
                blocks += [p @ torch.from_numpy(m) for p, m in zip(probs, self._factor)]
            elif part == "layercost":
                blocks += [costs["flops"] * _SCALE["flops"], costs["traffic"] * _SCALE["traffic"]]
            else:
                blocks.append(torch.stack([costs[k] * _SCALE[k] for k in _TOTALS]))
        return torch.cat(blocks)

    # -- the layout that fast linear maps use --------------------------------------
    def binary_tables(self) -> list[np.ndarray]:
        """Per decision a ``(choices, n_features)`` 0/1 matrix: the one-hot and factorized
        columns each choice switches on.  ``x @ W.T`` then equals the sum over decisions of
        ``(table_d @ W.T)[choice_d]`` plus the dense columns' product: a gather instead of a
        matmul with mostly-zero columns (how ``mlp`` predicts 10^5 archs a second)."""
        tables = [np.zeros((len(d.choices), self.n_features)) for d in self.space.decisions]
        col = 0
        for part, width in zip(self.parts, self._widths()):
            if part == "onehot":
                for t in tables:
                    t[np.arange(len(t)), col + np.arange(len(t))] = 1.0
                    col += len(t)
                continue
            if part == "factorized":
                for t, m in zip(tables, self._factor):
                    t[:, col:col + m.shape[1]] = m
                    col += m.shape[1]
                continue
            col += width
        return tables

    def dense_columns(self) -> np.ndarray:
        """Column indices of the non-binary features (``layercost``, ``totals``)."""
        cols, col = [], 0
        for part, width in zip(self.parts, self._widths()):
            if part in ("layercost", "totals"):
                cols += range(col, col + width)
            col += width
        return np.asarray(cols, dtype=np.int64)

    def encode_dense(self, idx: np.ndarray) -> np.ndarray:
        """Only the non-binary columns of ``encode`` (in ``dense_columns`` order)."""
        parts = [p for p in self.parts if p in ("layercost", "totals")]
        if not parts:
            return np.zeros((len(idx), 0))
        costs = self.table.layer_costs(idx)
        return np.concatenate([_dense_block(p, costs) for p in parts], axis=1)

    def _widths(self) -> list[int]:
        n_layers = self.table.n_layers
        out = []
        for part in self.parts:
            if part == "onehot":
                out.append(sum(len(d.choices) for d in self.space.decisions))
            elif part == "factorized":
                out.append(sum(m.shape[1] for m in self._factor))
            elif part == "layercost":
                out.append(2 * n_layers)
            else:
                out.append(len(_TOTALS))
        return out

    def _names(self) -> list[str]:
        names: list[str] = []
        for part in self.parts:
            if part == "onehot":
                names += [f"{d.name}={c}" for d in self.space.decisions for c in d.choices]
            elif part == "factorized":
                for d in self.space.decisions:
                    names += [f"{d.name}.{k}={v}" for k, vals in _multi_dims(d).items() for v in vals]
            elif part == "layercost":
                n = self.table.n_layers
                names += [f"layer{i}.mflops" for i in range(n)] + [f"layer{i}.mtraffic" for i in range(n)]
            else:
                names += ["mflops", "mparams", "mact", "depth", "resolution"]
        return names


def _dense_block(part: str, costs: dict) -> np.ndarray:
    if part == "layercost":
        return np.concatenate([costs["flops"] * _SCALE["flops"], costs["traffic"] * _SCALE["traffic"]], 1)
    return np.stack([costs[k] * _SCALE[k] for k in _TOTALS], 1)


def _multi_dims(decision) -> dict[str, tuple]:
    """Dimensions with more than one value (single-valued ones carry no information)."""
    return {k: v for k, v in decision.dim_values().items() if len(v) > 1}


def _factor_matrix(decision) -> np.ndarray:
    """``(choices, dim values)`` 0/1 matrix: which dimension value each choice has."""
    dims = _multi_dims(decision)
    cols = [(k, v) for k, vals in dims.items() for v in vals]
    m = np.zeros((len(decision.choices), len(cols)))
    for c, pairs in enumerate(decision.dims):
        have = dict(pairs)
        for j, (k, v) in enumerate(cols):
            if k in have and have[k] == v:
                m[c, j] = 1.0
    return m
