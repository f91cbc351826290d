"""Few-shot transfer: a predictor of another device, corrected by a handful of measurements here.

Why: a new device should not mean profiling from zero.  HELP (Lee et al., NeurIPS 2021)
meta-learns a predictor over many devices and adapts it to a new one from ~10 measurements;
LitePred (Feng et al., NSDI 2024) pre-trains kernel predictors on similar devices and
fine-tunes them with a few hundred target samples.  Both rest on one observation: across
devices, latencies of the same archs are strongly rank-correlated, and what differs is a
scale, a curvature and a few op types that one device runs relatively faster.  hwnas has one
base predictor, not a meta-learned family, so it adapts with the smallest model that
captures those three things, under a strong prior that keeps the base where the data are
silent:

    log latency_new(arch) = a + b * log base(arch) + sum_l w[l, op_l]

- ``a`` (the device's speed) is free; ``b`` (how the device stretches fast vs slow archs) has
  a prior at 1; the per-layer corrections ``w`` (a one-hot block: "on this device, op X at
  layer l costs more") have a prior at 0.  Each prior is a ridge penalty ``lam * (beta - mu)^2``.
- The penalties are chosen by leave-one-out error over a small grid that runs from "scale
  only" (``b = 1``, ``w = 0``: one number learned) to "free affine + corrections", so five
  samples fit a scale and fifty can afford the per-layer terms.  LOO on so few points is
  noisy, which is why the grid is short and ordered from the strongest prior.
- The leave-one-out residuals of the chosen penalties are the predictor's residuals for
  ``predict_with_std``.

The adapted predictor embeds its base (a whole ``.hwp``), carries the *new* device's
fingerprint, and is differentiable when its base is (``exp`` of an affine map of the base's
log latency plus a linear term in the probabilities).
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import DataError, PredictorError
from hwnas.predictors._base import Predictor
from hwnas.predictors._registry import register_predictor

#: fewest target measurements ``adapt`` accepts: two parameters and one left out
MIN_SAMPLES = 3
#: (lambda for b - 1, lambda for w) from the strongest prior to the weakest
PRIOR_GRID = ((1e8, 1e8), (10.0, 1e8), (1.0, 1e8), (0.0, 1e8), (1.0, 30.0), (1.0, 10.0), (1.0, 3.0), (0.0, 3.0))


@register_predictor("adapted")
class AdaptedPredictor(Predictor):
    def __init__(self, space, *, encoding: str = "onehot", resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, base=None):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.base = base

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base_ if hasattr(self, "base_") else self.base, "differentiable", False))

    def get_params(self) -> dict:
        """Hyper-parameters only: the base predictor is saved inside the learned state."""
        return {k: v for k, v in super().get_params().items() if k != "base"}

    def clone(self):
        return type(self)(self.space, **self.get_params(), base=getattr(self, "base_", self.base))

    def _design(self, idx) -> np.ndarray:
        log_base = np.log(np.maximum(self.base_._predict(idx), 1e-9))
        return np.column_stack([np.ones(len(idx)), log_base, self.encoding_.encode(idx)])

    def _fit(self, idx, y_ms):
        if self.base is None:
            raise PredictorError("the 'adapted' predictor needs base=<a fitted predictor> (see adapt_predictor)")
        if self.base.space_name != self.space_name:
            raise PredictorError(f"the base predictor is for space {self.base.space_name!r}, not {self.space_name!r}")
        if len(idx) < MIN_SAMPLES:
            raise DataError(f"adapting needs at least {MIN_SAMPLES} measured archs of the new device, got {len(idx)}")
        self.base_ = self.base
        x, t = self._design(idx), np.log(y_ms)
        best = None
        for lam_b, lam_w in PRIOR_GRID:
            loo = _loo_residuals(x, t, lam_b, lam_w)
            err = float(np.mean(loo ** 2))
            if best is None or err < best[0] - 1e-12:  # ties keep the stronger prior
                best = (err, lam_b, lam_w, loo)
        _, self.lam_b_, self.lam_w_, self._loo = best
        self.coef_ = _solve(x, t, self.lam_b_, self.lam_w_)

    def _oof_residuals(self, idx, y_ms):
        """The chosen penalties' leave-one-out residuals (no extra fit)."""
        return self._loo

    def _predict(self, idx):
        return np.exp(self._design(idx) @ self.coef_)

    def expected_latency_torch(self, probs):
        """``exp(a + b log base_soft(probs) + w . probs)``, exact at one-hot ``probs``."""
        import torch

        self._check_fitted()
        base = self.base_.expected_latency_torch(probs)
        soft = self.encoding_.encode_soft(probs)
        c = torch.from_numpy(self.coef_)
        return torch.exp(c[0] + c[1] * torch.log(base) + soft @ c[2:])

    def describe(self) -> dict:
        out = super().describe()
        if hasattr(self, "base_"):
            out["base"] = {"model": self.base_.name, "device_id": self.base_.device_id,
                           "device_name": self.base_.device_name, "n_train": getattr(self.base_, "n_train_", None)}
            out["prior"] = {"lambda_b": self.lam_b_, "lambda_w": self.lam_w_, "a": float(self.coef_[0]),
                            "b": float(self.coef_[1])}
        return out

    def _state(self):
        from hwnas.predictors._io import predictor_bytes

        return {"base.hwp": predictor_bytes(self.base_), "coef": self.coef_, "lam_b": self.lam_b_,
                "lam_w": self.lam_w_}

    def _set_state(self, state):
        from hwnas.predictors._io import load_predictor

        self.base_ = load_predictor(bytes(state["base.hwp"]), space=self.space)
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.lam_b_, self.lam_w_ = float(state["lam_b"]), float(state["lam_w"])
        self._loo = np.zeros(0)


def _solve(x, t, lam_b: float, lam_w: float) -> np.ndarray:
    """Ridge with prior means: minimise ``|t - x beta|^2 + lam_b (b - 1)^2 + lam_w |w|^2``."""
    d = x.shape[1]
    lam = np.full(d, lam_w)
    lam[0], lam[1] = 0.0, lam_b
    mu = np.zeros(d)
    mu[1] = 1.0
    return np.linalg.solve(x.T @ x + np.diag(lam) + 1e-10 * np.eye(d), x.T @ t + lam * mu)


def _loo_residuals(x, t, lam_b, lam_w) -> np.ndarray:
    """Exact leave-one-out residuals (one solve per left-out row: n is small here)."""
    n = len(t)
    out = np.empty(n)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        keep[i] = False
        beta = _solve(x[keep], t[keep], lam_b, lam_w)
        out[i] = t[i] - x[i] @ beta
        keep[i] = True
    return out


def adapt_predictor(base, data, *, seed: int = 0):
    """An ``adapted`` predictor fitted to ``data`` (``LatencyData`` of the new device), with the
    new device's fingerprint and the leave-one-out metrics of the few samples."""
    from hwnas.predictors._metrics import regression_metrics

    base._check_fitted()
    if base.space_name != data.space:
        raise PredictorError(f"the base predictor is for space {base.space_name!r}; the new device's data are "
                             f"for {data.space!r}: adapt a predictor of the same space")
    if len(data) < MIN_SAMPLES:
        raise DataError(f"adapting needs at least {MIN_SAMPLES} measured archs of the new device; "
                        f"{data.source or 'the data'} has {len(data)}")
    resolution = base.encoding_.table.resolutions[0] if not base.space.searchable_resolution else None
    pred = AdaptedPredictor(base.space, resolution=resolution, seed=seed, base=base)
    pred.fit(list(data.archs), data.latency_ms)
    loo_pred = data.latency_ms / np.exp(pred._loo)
    pred.metrics_ = {"loo": regression_metrics(data.latency_ms, loo_pred), "n_target": len(data),
                     "source": data.source, "base_metrics": base.metrics_}
    pred.device_id, pred.fingerprint, pred.device_name = data.device_id, data.fingerprint, data.device_name
    return pred
