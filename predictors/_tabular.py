"""``xgb``, ``gbr``, ``rf``, ``ridge``: off-the-shelf regressors on the encoding.

One class holds the shared fit/predict/persist logic; each registered model only says
which estimator it builds (timm style: an entry sets arguments, nothing else).  Tree
ensembles are scale-free, so their features are the raw encoding; ``ridge`` standardises
first and picks its penalty by efficient leave-one-out CV (``RidgeCV``).

Persistence: XGBoost uses its own JSON model format; scikit-learn estimators are pickled,
as scikit-learn itself recommends, so only load ``.hwp`` files you trust.
"""
from __future__ import annotations

import pickle

import numpy as np

from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING
from hwnas.predictors._registry import register_predictor


class TabularPredictor(Predictor):
    """A scikit-learn-compatible regressor on ``encode(arch)``; subclasses build it."""

    def _make_estimator(self):
        raise NotImplementedError

    def _fit(self, idx, y_ms):
        est = self._make_estimator()
        est.fit(self.encoding_.encode(idx), self._to_target(y_ms))
        self.estimator_ = est

    def _predict(self, idx):
        return self._from_target(np.asarray(self.estimator_.predict(self.encoding_.encode(idx)), dtype=np.float64))

    def _state(self):
        return {"estimator.pkl": pickle.dumps(self.estimator_, protocol=pickle.HIGHEST_PROTOCOL)}

    def _set_state(self, state):
        self.estimator_ = pickle.loads(state["estimator.pkl"])


@register_predictor("ridge")
class RidgePredictor(TabularPredictor):
    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.alphas = tuple(float(a) for a in alphas)

    def _make_estimator(self):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas))


@register_predictor("gbr")
class GBRPredictor(TabularPredictor):
    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, n_estimators: int = 400, learning_rate: float = 0.05,
                 max_depth: int = 3, subsample: float = 0.8):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample

    def _make_estimator(self):
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                         max_depth=self.max_depth, subsample=self.subsample,
                                         random_state=self.seed)


@register_predictor("rf")
class RFPredictor(TabularPredictor):
    """Random forest; the spread of its trees says where it is unsure (``predict_spread``)."""

    has_spread = True

    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, n_estimators: int = 300, max_features: float = 0.5,
                 min_samples_leaf: int = 1):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf

    def _make_estimator(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                     min_samples_leaf=self.min_samples_leaf, random_state=self.seed, n_jobs=1)

    def predict_spread(self, archs):
        self._check_fitted()
        x = self.encoding_.encode(self.encoding_.indices(archs))
        per_tree = np.stack([self._from_target(t.predict(x)) for t in self.estimator_.estimators_])
        return self._from_target(self.estimator_.predict(x)), per_tree.std(0)


@register_predictor("xgb")
class XGBPredictor(TabularPredictor):
    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, n_estimators: int = 500, learning_rate: float = 0.05,
                 max_depth: int = 4, subsample: float = 0.8, colsample_bytree: float = 0.6):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree

    def _make_estimator(self):
        from xgboost import XGBRegressor

        return XGBRegressor(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                            max_depth=self.max_depth, subsample=self.subsample,
                            colsample_bytree=self.colsample_bytree, random_state=self.seed, n_jobs=1)

    def _state(self):
        return {"model.xgb.json": bytes(self.estimator_.get_booster().save_raw("json"))}

    def _set_state(self, state):
        est = self._make_estimator()
        est.load_model(bytearray(state["model.xgb.json"]))
        self.estimator_ = est
