"""Latency predictors: encode an architecture, learn its measured latency, report honest error.

Installed as ``hwnas.predictors``.  Public API::

    p = create_predictor("mlp" | "xgb" | "gbr" | "rf" | "ridge" | "additive" | "hybrid" | "lut" | "ensemble",
                         space=space)
    p.fit(archs, latency_ms).predict(archs)            # milliseconds
    p.predict_with_std(archs); p.predict_interval(archs, 0.8); p.prob_within(archs, budget_ms)
    adapt_predictor(base, new_device_data)             # few-shot transfer to another device
    p.save("pred.hwp"); load_predictor("pred.hwp", space=..., fingerprint=..., force=False)
    regression_metrics(y_true_ms, y_pred_ms); select_uncertain(p, candidates, k)
"""
from hwnas.predictors._registry import (create_predictor, list_predictors, predictor_class,  # noqa: I001
                                        register_predictor, unregister_predictor)
from hwnas.predictors._base import Predictor, check_latencies
from hwnas.predictors._encoding import COMPONENTS, DEFAULT_ENCODING, Encoding, parse_encoding
from hwnas.predictors._metrics import regression_metrics
from hwnas.predictors import _adapt, _ensemble, _hybrid, _lut, _mlp, _tabular  # noqa: F401  (registers the built-ins)
from hwnas.predictors._adapt import adapt_predictor
from hwnas.predictors._io import load_predictor, read_meta
from hwnas.predictors._active import select_uncertain, uncertainty
from hwnas.predictors._data import LatencyData, load_store_data, read_latency_csv, split_rows
from hwnas.predictors._select import AUTO_CANDIDATES, METRICS, candidate, cross_validate, select_model
from hwnas.predictors._uncertainty import coverage
from hwnas.predictors._train import train_predictor

__all__ = [
    "AUTO_CANDIDATES", "COMPONENTS", "METRICS", "adapt_predictor", "candidate", "coverage", "DEFAULT_ENCODING", "Encoding", "LatencyData", "Predictor",
    "check_latencies", "create_predictor", "cross_validate", "list_predictors", "load_predictor",
    "load_store_data", "parse_encoding", "predictor_class", "read_latency_csv", "read_meta",
    "register_predictor", "regression_metrics", "select_model", "select_uncertain", "split_rows",
    "train_predictor", "uncertainty", "unregister_predictor",
]
