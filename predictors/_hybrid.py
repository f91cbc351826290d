"""``additive`` and ``hybrid``: a per-layer lookup table, and the table plus a learned correction.

``additive`` is the lookup table learned from whole networks: ``latency = c + sum_l T[l, op_l]``,
a ridge regression on the one-hot encoding with the raw ms as target (FBNet's LUT, Wu et al.,
CVPR 2019, eq. 6, without timing layers alone).  It is the baseline every learned model must
beat: issue 11 found ``auto`` ranking below it on 5 of 6 devices.

``hybrid`` is that table times a learned correction, in nn-Meter's spirit (Zhang et al.,
MobiSys 2021: latency = sum of kernel latencies, each kernel predicted; here the sum is the
table and one model learns what the sum misses): ``latency = A(arch) * exp(g(x, log A))``,
where ``A`` is the additive part (the measured per-layer table of ``hwnas profile --layers``
when one is given, else ``additive``) and ``g`` (``xgb`` by default) is fitted to
``log(measured / A)`` on the full encoding plus ``log A``, with ``A`` out-of-fold while the
correction trains (see ``_oof_additive``).  Why a ratio: where the table is
right the correction is zero, and tree models extrapolate a ratio to unseen archs more
safely than an absolute residual.
"""
from __future__ import annotations

import pickle

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING, Encoding
from hwnas.predictors._lut import LUTPredictor
from hwnas.predictors._registry import create_predictor, register_predictor
from hwnas.predictors._tabular import RidgePredictor
from hwnas.predictors._uncertainty import fold_splits

RESIDUAL_MODELS = ("xgb", "gbr", "rf", "ridge")
OOF_FOLDS = 5  # folds of the table's out-of-fold predictions while the correction trains


@register_predictor("additive")
class AdditivePredictor(RidgePredictor):
    """Ridge on the one-hot encoding, raw ms target: a per-layer lookup table fitted end to end."""

    def __init__(self, space, *, encoding: str = "onehot", resolution: int | None = None,
                 log_target: bool = False, seed: int = 0, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed,
                         alphas=alphas)


@register_predictor("hybrid")
class HybridPredictor(Predictor):
    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, residual: str = "xgb",
                 residual_params: dict | None = None, table: dict | None = None):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        if residual not in RESIDUAL_MODELS:
            raise PredictorError(f"hybrid residual model must be one of {', '.join(RESIDUAL_MODELS)}, got {residual!r}")
        self.residual = residual
        self.residual_params = dict(residual_params or {})
        self.table = table

    def get_params(self) -> dict:
        """Hyper-parameters only: a measured table is data and is saved with the learned state."""
        return {k: v for k, v in super().get_params().items() if k != "table"}

    def clone(self):
        return type(self)(self.space, **self.get_params(), table=self.table)

    def _new_base(self, kind: str, table=None):
        if kind == "lut":
            base = LUTPredictor(self.space, resolution=self.resolution, seed=self.seed, table=table)
        else:
            base = AdditivePredictor(self.space, resolution=self.resolution, seed=self.seed)
        base.encoding_ = Encoding(self.space, base.encoding, self.resolution)
        return base

    def _new_estimator(self):
        return create_predictor(self.residual, self.space, seed=self.seed, **self.residual_params)._make_estimator()

    def _additive(self, idx) -> np.ndarray:
        return np.maximum(self.base_._predict(idx), self.floor_ms_)

    def _features(self, idx, a) -> np.ndarray:
        return np.column_stack([self.encoding_.encode(idx), np.log(a)])

    def _fit(self, idx, y_ms):
        self.base_kind_ = "lut" if self.table else "additive"
        # a linear table can dip below zero far from its data; a quarter of the fastest
        # measured arch is a floor no real arch of the space is below
        self.floor_ms_ = 0.25 * float(np.min(y_ms))
        self.base_ = self._new_base(self.base_kind_, self.table)
        self.base_._fit(idx, y_ms)
        # a measured table is not fitted to these archs (its in-sample prediction is honest);
        # too few archs for folds: in-sample as well
        in_sample = self.base_kind_ == "lut" or len(idx) < 2 * OOF_FOLDS
        a = self._additive(idx) if in_sample else self._oof_additive(idx, y_ms)
        est = self._new_estimator()
        est.fit(self._features(idx, a), np.log(y_ms / a))
        self.estimator_ = est

    def _oof_additive(self, idx, y_ms, folds: int = OOF_FOLDS) -> np.ndarray:
        """The table's prediction of each training arch from a table fitted without it
        (stacking, Wolpert 1992): in-sample, a table fitted to 300 archs with 150 one-hot
        columns already bends towards what it cannot model, and the correction would learn
        the small in-sample residuals instead of the real ones."""
        out = np.empty(len(idx))
        for train, part in fold_splits(len(idx), folds, self.seed + 31):
            base = self._new_base(self.base_kind_)
            base._fit(idx[train], y_ms[train])
            out[part] = base._predict(idx[part])
        return np.maximum(out, self.floor_ms_)

    def _predict(self, idx):
        a = self._additive(idx)
        return a * np.exp(np.asarray(self.estimator_.predict(self._features(idx, a)), dtype=np.float64))

    def _state(self):
        blob = (bytes(self.estimator_.get_booster().save_raw("json")) if self.residual == "xgb"
                else pickle.dumps(self.estimator_, protocol=pickle.HIGHEST_PROTOCOL))
        return {"base_kind": self.base_kind_, "floor_ms": self.floor_ms_, "residual.bin": blob,
                **{f"base/{k}": v for k, v in self.base_._state().items()}}

    def _set_state(self, state):
        self.base_kind_, self.floor_ms_ = str(state["base_kind"]), float(state["floor_ms"])
        self.base_ = self._new_base(self.base_kind_)
        self.base_._set_state({k[5:]: v for k, v in state.items() if k.startswith("base/")})
        if self.residual == "xgb":
            est = self._new_estimator()
            est.load_model(bytearray(state["residual.bin"]))
        else:
            est = pickle.loads(state["residual.bin"])
        self.estimator_ = est
