"""Per-layer analytic costs of every architecture of a space, as lookup tables.

Why tables: a layer's cost depends only on (layer, op, input channels, input side), and
the input channels are set by the previous layers' width and skip choices.  Walking a
batch of archs layer by layer with a *state* ``(resolution, channels)`` per arch turns the
per-arch Python work of ``hwnas.cost.arch_cost`` into a handful of numpy gathers, which is
what lets a predictor score 10^5 archs a second.

The same tables give the *expected* cost under independent per-decision probabilities
(the product distribution that FBNet / FP-NAS search over): the state distribution is
propagated exactly, ``P(s_{i+1}) = sum_{s,j} P(s_i = s) p_ij [next(s, j) = s_{i+1}]`` and
``E[cost_i] = sum_{s,j} P(s_i = s) p_ij cost_i(s, j)``.  With one-hot probabilities this
is exactly the cost of that arch, so a soft encoding built from it reproduces ``predict``.

Users: the predictors' encoding (``hwnas.predictors``), the search's exact expected FLOPs
(``hwnas.search.penalty.expected_flops_fn``) and the exact cheapest / most expensive arch
(``hwnas.cost.cost_extremes``): one walk over the states, not three.
"""
from __future__ import annotations

import numpy as np

from hwnas.cost import fixed_cost, layer_cost
from hwnas.space import SearchSpace
from hwnas.space._plan import conv_out, plan_layer

#: per-layer quantities the tables hold (``traffic``: input + output + weight elements)
LAYER_FIELDS = ("flops", "params", "traffic", "out_elems")


class CostTable:
    """Lookup tables of per-layer costs over the reachable ``(resolution, channels)`` states."""

    def __init__(self, space: SearchSpace, resolution: int | None = None, *, num_classes: int | None = None):
        self.space = space
        ncls = space.num_classes if num_classes is None else int(num_classes)
        self.offset = 1 if space.searchable_resolution else 0
        self.resolutions = tuple(space.resolutions) if space.searchable_resolution else (
            space.resolution(None, resolution),)
        n_layers = len(space.layers)
        states = [[(r, space.stem.channels) for r in self.resolutions]]
        sizes = {r: [conv_out(r, space.stem.stride)] for r in self.resolutions}
        for layer in space.layers:
            for r in self.resolutions:
                sizes[r].append(conv_out(sizes[r][-1], layer.stride))
        self.tables: list[dict[str, np.ndarray]] = []
        self.next_state: list[np.ndarray] = []
        cache: dict[tuple, tuple] = {}
        for i, layer in enumerate(space.layers):
            cur = states[i]
            nxt: dict[tuple[int, int], int] = {}
            n_ops = len(layer.ops)
            tab = {f: np.zeros((len(cur), n_ops)) for f in LAYER_FIELDS}
            tab["skip"] = np.zeros((len(cur), n_ops))
            nxt_idx = np.zeros((len(cur), n_ops), dtype=np.int64)
            for s, (r, ch) in enumerate(cur):
                size = sizes[r][i]
                for j, op in enumerate(layer.ops):
                    key = (i, op.name, ch, size)
                    if key not in cache:
                        lp = plan_layer(layer, op, ch, size)
                        c = layer_cost(lp)
                        cache[key] = (c.flops, c.params, c.traffic, c.out_elems, lp.out_channels)
                    flops, params, traffic, out_elems, out_ch = cache[key]
                    for f, v in zip(LAYER_FIELDS, (flops, params, traffic, out_elems)):
                        tab[f][s, j] = v
                    tab["skip"][s, j] = float(op.skip)
                    nxt_idx[s, j] = nxt.setdefault((r, out_ch), len(nxt))
            self.tables.append(tab)
            self.next_state.append(nxt_idx)
            states.append(list(nxt))
        self.states = states
        final = states[n_layers]
        fixed = [fixed_cost(space, r, ch, ncls) for r, ch in final]
        self.fixed = {
            "flops": np.array([c.flops for c, _ in fixed], dtype=np.float64),
            "params": np.array([c.params for c, _ in fixed], dtype=np.float64),
            "act": np.array([a for _, a in fixed], dtype=np.float64),
        }

    @property
    def n_layers(self) -> int:
        return len(self.tables)

    def initial_state(self, idx: np.ndarray) -> np.ndarray:
        if self.offset:
            return idx[:, 0].astype(np.int64)
        return np.zeros(len(idx), dtype=np.int64)

    def state_path(self, idx: np.ndarray) -> np.ndarray:
        """``(N, L + 1)`` state index of each arch before every layer and after the last."""
        path = np.empty((len(idx), self.n_layers + 1), dtype=np.int64)
        path[:, 0] = self.initial_state(idx)
        for i in range(self.n_layers):
            path[:, i + 1] = self.next_state[i][path[:, i], idx[:, self.offset + i]]
        return path

    def layer_costs(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Per-layer ``(N, L)`` cost arrays plus totals, for decision indices ``(N, D)``."""
        n = len(idx)
        path = self.state_path(idx)
        out = {f: np.empty((n, self.n_layers)) for f in (*LAYER_FIELDS, "skip")}
        for i in range(self.n_layers):
            state, j = path[:, i], idx[:, self.offset + i]
            for f in out:
                out[f][:, i] = self.tables[i][f][state, j]
        final = path[:, -1]
        out["total_flops"] = out["flops"].sum(1) + self.fixed["flops"][final]
        out["total_params"] = out["params"].sum(1) + self.fixed["params"][final]
        out["total_act"] = out["out_elems"].sum(1) + self.fixed["act"][final]
        out["depth"] = self.n_layers - out["skip"].sum(1)
        res = np.asarray(self.resolutions, dtype=np.float64)
        out["resolution"] = res[path[:, 0]]
        return out

    def expected_costs(self, probs):
        """``layer_costs`` under independent per-decision probabilities (torch, float64).

        ``probs[d]`` is a probability vector over ``space.decisions[d].choices``; the result
        holds ``(L,)`` tensors per field and scalar totals, differentiable w.r.t. ``probs``.
        """
        import torch

        t = self._torch_tables()
        probs = [p.to(torch.float64) for p in probs]
        ps = probs[0] if self.offset else torch.ones(1, dtype=torch.float64)
        cols = {f: [] for f in (*LAYER_FIELDS, "skip")}
        for i in range(self.n_layers):
            p = probs[self.offset + i]
            for f in cols:
                cols[f].append(ps @ t["tab"][i][f] @ p)
            joint = (ps[:, None] * p[None, :]).reshape(-1)
            ps = joint @ t["trans"][i]
        out = {f: torch.stack(v) for f, v in cols.items()}
        out["total_flops"] = out["flops"].sum() + ps @ t["fixed"]["flops"]
        out["total_params"] = out["params"].sum() + ps @ t["fixed"]["params"]
        out["total_act"] = out["out_elems"].sum() + ps @ t["fixed"]["act"]
        out["depth"] = self.n_layers - out["skip"].sum()
        res = torch.tensor(self.resolutions, dtype=torch.float64)
        out["resolution"] = probs[0] @ res if self.offset else res[0]
        return out

    def _torch_tables(self):
        cached = getattr(self, "_torch_cache", None)
        if cached is not None:
            return cached
        import torch

        tabs, trans = [], []
        for i, tab in enumerate(self.tables):
            tabs.append({f: torch.from_numpy(v) for f, v in tab.items()})
            nxt = self.next_state[i]
            m = torch.zeros(nxt.size, len(self.states[i + 1]), dtype=torch.float64)
            m[torch.arange(nxt.size), torch.from_numpy(nxt.reshape(-1))] = 1.0
            trans.append(m)
        fixed = {k: torch.from_numpy(v) for k, v in self.fixed.items()}
        self._torch_cache = {"tab": tabs, "trans": trans, "fixed": fixed}
        return self._torch_cache
