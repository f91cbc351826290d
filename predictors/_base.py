"""The ``Predictor`` interface: architecture -> latency in milliseconds.

scikit-learn's estimator contract (``sklearn/base.py``): ``__init__`` only stores
hyper-parameters; ``fit`` validates, learns and returns ``self``; learned state ends in
``_``; using an unfitted model is an error.  A predictor also carries where its numbers
come from (space, device fingerprint, training-set size, held-out metrics), because a
latency model is only valid for the device it was measured on.
"""
from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from hwnas.errors import DataError, PredictorError
from hwnas.space import SearchSpace, get_space

from hwnas.predictors._encoding import DEFAULT_ENCODING, Encoding

log = logging.getLogger(__name__)


class Predictor(ABC):
    """Base class: subclasses implement ``_fit``, ``_predict`` and their state (de)serialisation."""

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    #: members or trees whose disagreement says *where* the model is unsure (``predict_spread``);
    #: every fitted predictor has a calibrated ``predict_with_std`` regardless
    has_spread: ClassVar[bool] = False
    #: folds of the out-of-fold residuals behind ``predict_with_std`` (models with their own
    #: held-out residuals, such as the MLP's inner validation split, override ``_oof_residuals``)
    residual_folds: ClassVar[int] = 3

    def __init__(self, space: SearchSpace | str, *, encoding: str = DEFAULT_ENCODING,
                 resolution: int | None = None, log_target: bool = True, seed: int = 0):
        self.space = get_space(space) if isinstance(space, str) else space
        self.encoding = encoding
        self.resolution = resolution
        self.log_target = log_target
        self.seed = seed
        self.fingerprint: dict | None = None
        self.device_id: str | None = None
        self.device_name: str | None = None
        self.metrics_: dict = {}

    # -- hyper-parameters (sklearn style) ------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        names = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name not in ("self", "space") and p.kind is p.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.param_names()}

    @property
    def space_name(self) -> str:
        return self.space.name

    # -- fitting -------------------------------------------------------------------
    def fit(self, archs, latency_ms, *, uncertainty: bool = True) -> "Predictor":
        """Learn from measured latencies (ms); returns ``self``.

        ``uncertainty=False`` skips the out-of-fold residuals behind ``predict_with_std``
        (cross-validation and committees refit many copies that never answer it)."""
        self.encoding_ = Encoding(self.space, self.encoding, self.resolution)
        idx = self.encoding_.indices(archs)
        y = check_latencies(latency_ms, len(idx))
        if len(idx) < 2:
            raise DataError(f"need at least 2 measured archs to fit a predictor, got {len(idx)}")
        self._fit(idx, y)
        self.residuals_ = self._oof_residuals(idx, y) if uncertainty else np.zeros(0)
        self.n_train_ = len(idx)
        self.train_archs_ = tuple(str(self.space.from_indices(row)) for row in idx)
        self.train_latency_ms_ = y.copy()
        return self

    @abstractmethod
    def _fit(self, idx: np.ndarray, y_ms: np.ndarray) -> None:
        """Learn from decision indices ``(N, D)`` and latencies in ms."""

    @abstractmethod
    def _predict(self, idx: np.ndarray) -> np.ndarray:
        """Latency (ms) for decision indices ``(N, D)``."""

    def predict(self, archs) -> np.ndarray:
        """Predicted latency in ms, one per arch (Archs, canonical strings, or an index array)."""
        self._check_fitted()
        idx = self.encoding_.indices(archs)
        if len(idx) == 0:
            return np.zeros(0)
        return np.asarray(self._predict(idx), dtype=np.float64)

    # -- uncertainty ----------------------------------------------------------------
    def predict_with_std(self, archs) -> tuple[np.ndarray, np.ndarray]:
        """Prediction and predictive standard deviation (ms), from ``uncertainty.py``'s
        out-of-fold residuals (split-conformal, log scale)."""
        from hwnas.predictors._uncertainty import std_ms

        mean = self.predict(archs)
        return mean, std_ms(self, mean)

    def predict_interval(self, archs, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` ms that hold the measured latency with probability ``level``."""
        from hwnas.predictors._uncertainty import interval

        return interval(self, self.predict(archs), level)

    def prob_within(self, archs, budget_ms: float) -> np.ndarray:
        """``P(latency <= budget_ms)`` per arch under the residual distribution."""
        from hwnas.predictors._uncertainty import prob_below

        return prob_below(self, self.predict(archs), budget_ms)

    def predict_spread(self, archs) -> tuple[np.ndarray, np.ndarray]:
        """Mean and the members' (or trees') standard deviation, for models that have members."""
        raise PredictorError(f"predictor {self.name!r} has no members to disagree; "
                             "select_uncertain builds a bootstrap committee for it")

    def _oof_residuals(self, idx: np.ndarray, y_ms: np.ndarray) -> np.ndarray:
        """Signed ``log(measured / predicted)`` of every training arch, each predicted by a
        copy fitted without it (``residual_folds``-fold); empty below 2 archs a fold."""
        from hwnas.predictors._uncertainty import kfold_residuals

        return kfold_residuals(self, idx, y_ms, self.residual_folds)

    def clone(self) -> "Predictor":
        """An unfitted copy with the same hyper-parameters."""
        return type(self)(self.space, **self.get_params())

    def score(self, archs, latency_ms) -> dict:
        """``regression_metrics`` of this predictor on measured data."""
        from hwnas.predictors._metrics import regression_metrics

        return regression_metrics(latency_ms, self.predict(archs))

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoding_"):
            raise PredictorError(f"this {self.name!r} predictor is not fitted yet: call fit(archs, latency_ms) "
                                 "or load a saved one with load_predictor(path)")

    # -- target transform ---------------------------------------------------------
    @property
    def _log(self) -> bool:
        """The target transform in use: a model that chooses it (``log_target=None``) sets
        ``log_target_`` when it fits."""
        chosen = getattr(self, "log_target_", None)
        return bool(self.log_target if chosen is None else chosen)

    def _to_target(self, y_ms: np.ndarray) -> np.ndarray:
        return np.log(y_ms) if self._log else y_ms

    def _from_target(self, t: np.ndarray) -> np.ndarray:
        return np.exp(t) if self._log else t

    # -- persistence ----------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict:
        """Learned state: values are numpy arrays, bytes, or JSON-able objects."""

    @abstractmethod
    def _set_state(self, state: dict) -> None:
        """Inverse of ``_state`` (``encoding_`` is already rebuilt)."""

    def save(self, path) -> None:
        """Write a single ``.hwp`` file (see ``hwnas.predictors._io``)."""
        from hwnas.predictors._io import save_predictor

        save_predictor(self, path)

    def describe(self) -> dict:
        """What this predictor is and where its numbers come from (JSON-able)."""
        fitted = hasattr(self, "encoding_")
        return {
            "model": self.name, "space": self.space_name, "params": self.get_params(),
            "encoding": self.encoding, "n_features": self.encoding_.n_features if fitted else None,
            "differentiable": self.differentiable, "has_spread": self.has_spread,
            "fitted": fitted, "n_train": getattr(self, "n_train_", None),
            "device_id": self.device_id, "device_name": self.device_name, "fingerprint": self.fingerprint, "metrics": self.metrics_,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(space={self.space_name!r}, {params})"


def check_latencies(latency_ms, n: int | None = None) -> np.ndarray:
    """Finite, positive, 1-D latencies in ms, or a ``DataError`` naming the bad entries."""
    y = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
    if n is not None and len(y) != n:
        raise DataError(f"got {n} archs but {len(y)} latencies")
    bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
    if len(bad):
        shown = ", ".join(f"#{i}={y[i]!r}" for i in bad[:5])
        raise DataError(f"latencies must be finite and > 0 ms; {len(bad)} are not: {shown}")
    return y
