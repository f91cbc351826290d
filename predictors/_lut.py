"""``lut``: the FBNet / ProxylessNAS baseline, a sum of per-layer latencies plus a constant.

FBNet (Wu et al., CVPR 2019, eq. 6) and ProxylessNAS (Cai et al., ICLR 2019) model latency
as ``sum_l LUT[l, op_l]``; each entry is the latency of one layer measured in isolation
(``hwnas profile --layers`` measures each (layer position, op, input channels) once).
The stem, head and per-inference overheads are not in any entry, so one constant is fitted
to measured whole networks (the median residual, robust to a few slow runs); with
``fit_scale=True`` a scale is fitted as well (least squares), because layers timed alone
miss the cache effects of running back to back.

A missing entry is an error naming the key, never a silent zero: a zero would make the
search prefer exactly the layers nobody measured.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING
from hwnas.predictors._registry import register_predictor


@register_predictor("lut")
class LUTPredictor(Predictor):
    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = False, seed: int = 0, table: dict | None = None, fit_scale: bool = False):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.table = table
        self.fit_scale = fit_scale

    def get_params(self) -> dict:
        """Hyper-parameters only: the table is data and is saved with the learned state."""
        return {k: v for k, v in super().get_params().items() if k != "table"}

    def clone(self):
        """A copy that keeps the table (it is data, not a hyper-parameter)."""
        return type(self)(self.space, **self.get_params(), table=getattr(self, "table_", None) or self.table)

    def _fit(self, idx, y_ms):
        if not self.table:
            raise PredictorError(
                "the 'lut' predictor needs a per-layer latency table: pass "
                "table=LatencyStore(db).layer_table(space, device) (measure it with 'hwnas profile --layers')")
        self.table_ = {(int(l), str(o), int(c)): float(v) for (l, o, c), v in self.table.items()}
        self._build()
        s = self._sum(idx)
        if self.fit_scale:
            a = np.vstack([s, np.ones_like(s)]).T
            self.scale_, self.constant_ = (float(v) for v in np.linalg.lstsq(a, y_ms, rcond=None)[0])
        else:
            self.scale_, self.constant_ = 1.0, float(np.median(y_ms - s))

    def _build(self):
        """Per layer a ``(states, ops)`` array of table entries (NaN where missing)."""
        ct = self.encoding_.table
        self._lut = []
        for i, layer in enumerate(self.space.layers):
            m = np.full((len(ct.states[i]), len(layer.ops)), np.nan)
            for s, (_res, ch) in enumerate(ct.states[i]):
                for j, op in enumerate(layer.ops):
                    m[s, j] = self.table_.get((i, op.name, ch), np.nan)
            self._lut.append(m)

    def _sum(self, idx) -> np.ndarray:
        ct = self.encoding_.table
        path = ct.state_path(idx)
        total = np.zeros(len(idx))
        for i, m in enumerate(self._lut):
            vals = m[path[:, i], idx[:, ct.offset + i]]
            miss = np.flatnonzero(np.isnan(vals))
            if len(miss):
                r = miss[0]
                op = self.space.layers[i].ops[idx[r, ct.offset + i]].name
                ch = ct.states[i][path[r, i]][1]
                raise PredictorError(
                    f"the layer table has no latency for key (layer={i}, op={op!r}, in_channels={ch}) "
                    f"({len(miss)} of {len(idx)} archs need it; the table has {len(self.table_)} entries); "
                    "measure it with 'hwnas profile --layers'")
            total += vals
        return total

    def _predict(self, idx):
        return self.scale_ * self._sum(idx) + self.constant_

    def _state(self):
        keys = sorted(self.table_)
        return {"layer": np.array([k[0] for k in keys], dtype=np.int64), "op": [k[1] for k in keys],
                "in_channels": np.array([k[2] for k in keys], dtype=np.int64),
                "ms": np.array([self.table_[k] for k in keys]), "scale": self.scale_, "constant": self.constant_}

    def _set_state(self, state):
        self.table_ = {(int(l), str(o), int(c)): float(v) for l, o, c, v in
                       zip(state["layer"], state["op"], state["in_channels"], state["ms"])}
        self.scale_, self.constant_ = float(state["scale"]), float(state["constant"])
        self._build()
