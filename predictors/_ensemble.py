"""``ensemble``: bootstrap copies of one model (bagging; ``xgb`` by default, since ``mlp`` is
already a seed ensemble); their spread says where the model is unsure.

Why bootstrap: it is the cheapest honest uncertainty for a regressor (Efron 1979; deep
ensembles, Lakshminarayanan et al. 2017, add random initialisation, which the MLP members
get from their seeds).  Active profiling (``select_uncertain``) measures next where the
members disagree most.  With MLP members the ensemble is differentiable too: its expected
latency is the members' mean.
"""
from __future__ import annotations

import numpy as np

from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING
from hwnas.predictors._registry import create_predictor, register_predictor


@register_predictor("ensemble")
class EnsemblePredictor(Predictor):
    has_spread = True

    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, member: str = "xgb", n_members: int = 5,
                 bootstrap: bool = True, member_params: dict | None = None):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.member = member
        self.n_members = n_members
        self.bootstrap = bootstrap
        self.member_params = dict(member_params or {})

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return bool(getattr(self._new_member(0), "differentiable", False))

    def _new_member(self, i: int):
        return create_predictor(self.member, self.space, encoding=self.encoding, resolution=self.resolution,
                                log_target=self.log_target, seed=self.seed + 1000 * i, **self.member_params)

    def _fit(self, idx, y_ms):
        rng = np.random.default_rng(self.seed)
        members, oob = [], []
        for i in range(self.n_members):
            rows = rng.integers(len(idx), size=len(idx)) if self.bootstrap else np.arange(len(idx))
            m = self._new_member(i)
            m.encoding_ = self.encoding_
            m._fit(idx[rows], y_ms[rows])
            members.append(m)
            oob.append(np.setdiff1d(np.arange(len(idx)), rows))
        self.members_ = members
        self._oob = oob

    def _oof_residuals(self, idx, y_ms):
        """Out-of-bag residuals: each arch predicted by the members whose bootstrap sample
        missed it (Breiman 1996); no extra fit.  Without bootstrap, the k-fold default."""
        if not self.bootstrap:
            return super()._oof_residuals(idx, y_ms)
        from hwnas.predictors._uncertainty import log_ratio

        total, count = np.zeros(len(idx)), np.zeros(len(idx))
        for m, rows in zip(self.members_, self._oob):
            if len(rows):
                total[rows] += m._predict(idx[rows])
                count[rows] += 1
        seen = count > 0
        return log_ratio(y_ms[seen], total[seen] / count[seen])

    def _all(self, idx) -> np.ndarray:
        return np.stack([m._predict(idx) for m in self.members_])

    def _predict(self, idx):
        return self._all(idx).mean(0)

    def predict_spread(self, archs):
        self._check_fitted()
        preds = self._all(self.encoding_.indices(archs))
        return preds.mean(0), preds.std(0)

    def expected_latency_torch(self, probs):
        """Mean of the members' ``expected_latency_torch`` (MLP members only)."""
        import torch

        self._check_fitted()
        return torch.stack([m.expected_latency_torch(probs) for m in self.members_]).mean()

    def _state(self):
        return {f"m{i}/{k}": v for i, m in enumerate(self.members_) for k, v in m._state().items()}

    def _set_state(self, state):
        members = []
        for i in range(self.n_members):
            m = self._new_member(i)
            m.encoding_ = self.encoding_
            prefix = f"m{i}/"
            m._set_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            members.append(m)
        self.members_ = members
