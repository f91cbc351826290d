"""Train a predictor on measured data with an honest held-out estimate (what the CLI runs).

Split once (seeded), optionally pick the model by k-fold CV on the train split (``auto``),
fit on the train split only, score on the held-out split, and record data provenance
(device, sizes, metrics) in the predictor so a saved file says what it is good for.
"""
from __future__ import annotations

from hwnas.errors import DataError, PredictorError

from hwnas.predictors._data import LatencyData, split_rows
from hwnas.predictors._metrics import regression_metrics
from hwnas.predictors._registry import create_predictor, predictor_class
from hwnas.predictors._select import candidate, metric_key, select_model
from hwnas.predictors._uncertainty import coverage


def train_predictor(data: LatencyData, space, model: str = "mlp", *, test_fraction: float = 0.2, seed: int = 0,
                    folds: int = 5, layer_table: dict | None = None, params: dict | None = None, on_cv=None,
                    metric: str = "within10", candidates=None):
    """``(fitted predictor, report)``; the report holds held-out metrics, the held-out
    coverage of the 80% / 95% intervals, and (``auto``) the CV table."""
    if space.name != data.space:
        raise DataError(f"the data is for space {data.space!r}, not {space.name!r}")
    metric_key(metric)  # an unknown metric fails before any fit
    if model != "auto":
        predictor_class(model)  # unknown name -> RegistryError listing the valid ones
    tr, te = split_rows(len(data), test_fraction, seed)
    train, test = data.subset(tr), data.subset(te)
    report: dict = {"model": model, "n_total": len(data), "n_train": len(train), "n_test": len(test),
                    "test_fraction": test_fraction, "seed": seed}
    params = dict(params or {})
    if model == "auto":
        label, report["cv"] = select_model(space, train.archs, train.latency_ms, candidates=candidates,
                                           folds=folds, seed=seed, metric=metric, table=layer_table,
                                           on_result=on_cv)
        model, chosen = candidate(label, layer_table)
        params = {**chosen, **params}
        report["model"], report["candidate"] = model, label
        report["selected_by"] = (f"{folds}-fold CV on the train split: the simplest model within one standard error "
                                 f"of the best {metric}")
    elif model == "hybrid" and layer_table:
        params["table"] = layer_table
    if model == "lut":
        if not layer_table:
            raise PredictorError("model 'lut' needs per-layer latencies: train from --db after "
                                 "'hwnas profile --layers' measured them")
        params["table"] = layer_table
    pred = create_predictor(model, space, seed=seed, **params).fit(list(train.archs), train.latency_ms)
    predicted = pred.predict(list(test.archs))
    metrics = regression_metrics(test.latency_ms, predicted)
    if len(getattr(pred, "residuals_", ())) >= 2:
        metrics.update(coverage(pred, list(test.archs), test.latency_ms, predicted_ms=predicted))
    report["test_metrics"] = metrics
    pred.metrics_ = {"heldout": metrics, "n_test": len(test), "test_fraction": test_fraction, "seed": seed,
                     "source": data.source, **({"cv": report["cv"]} if "cv" in report else {})}
    pred.device_id, pred.fingerprint, pred.device_name = data.device_id, data.fingerprint, data.device_name
    return pred, report
