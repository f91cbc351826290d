"""``hwnas predictor``: train, evaluate and query latency predictors (thin over hwnas.predictors)."""
from __future__ import annotations


import click

from hwnas.cli._common import echo_json, json_option

_MODELS_HELP = "mlp|xgb|gbr|rf|ridge|lut|ensemble|auto (auto: k-fold CV on the train split)"


@click.group()
def predictor():
    """Learn arch -> latency from measurements; evaluate and query saved predictors (.hwp)."""


def _space(name):
    from hwnas.space import get_space

    return get_space(name)


def _load_data(db, csv_path, space_name, device):
    """LatencyData from --db or --csv (exactly one)."""
    from hwnas.predictors import load_store_data, read_latency_csv

    if (db is None) == (csv_path is None):
        raise click.UsageError("give exactly one of --db FILE or --csv FILE")
    if csv_path is not None:
        if space_name is None:
            raise click.UsageError("--csv needs --space (the CSV's architecture strings belong to one space)")
        return read_latency_csv(csv_path, _space(space_name))
    if space_name is None:
        space_name = _only_space(db)
    return load_store_data(db, _space(space_name), device)


def _only_space(db) -> str:
    from pathlib import Path

    from hwnas.errors import DataError, valid_list
    from hwnas.profiling.store import LatencyStore

    if not Path(db).is_file():
        raise DataError(f"latency database not found: {str(db)!r}")
    with LatencyStore(db, create=False) as store:
        spaces = sorted({s for d in store.devices() for s, c in d["spaces"].items() if c.get("ok")})
    if len(spaces) != 1:
        raise DataError(f"{str(db)!r} holds {'no measured space' if not spaces else 'several spaces'}; "
                        f"pick one with --space{': ' + valid_list(spaces) if spaces else ''}")
    return spaces[0]


def _metrics_line(m: dict) -> str:
    tau = m.get("kendall_tau")
    rho = m.get("spearman_rho")
    return (f"RMSE {m['rmse_ms']:.4f} ms  MAPE {100 * m['mape']:.1f}%  within 5% {100 * m['within_5']:.1f}%  "
            f"within 10% {100 * m['within_10']:.1f}%  Kendall tau {tau:.3f}  Spearman rho {rho:.3f}  (n={m['n']})")


@predictor.command("train")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Latency store (SQLite) to train on.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="CSV with columns arch, latency_ms (needs --space).")
@click.option("--space", "space_name", default=None, help="Space name or YAML file (default: the only one in --db).")
@click.option("--device", default=None, help="Device id, id prefix or name in --db (default: the only one).")
@click.option("--model", default="mlp", show_default=True, help=_MODELS_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the predictor (.hwp).")
@click.option("--test-fraction", default=0.2, show_default=True, type=float, help="Share held out for metrics.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--folds", default=5, show_default=True, type=int, help="Cross-validation folds for --model auto.")
@click.option("--encoding", default=None, help="Feature encoding, e.g. onehot+layercost+totals.")
@json_option
def train(db, csv_path, space_name, device, model, out, test_fraction, seed, folds, encoding, as_json):
    """Fit a predictor on a train split and report held-out metrics."""
    from hwnas.predictors import train_predictor

    data = _load_data(db, csv_path, space_name, device)
    space = _space(space_name or data.space)
    table = _layer_table(db, space.name, data.device_id) if model == "lut" else None
    params = {"encoding": encoding} if encoding else {}
    on_cv = None
    if not as_json and model == "auto":
        on_cv = lambda name, m: click.echo(f"  cv {name:9s} within 10% {100 * m['within_10']:.1f}%  "  # noqa: E731
                                           f"tau {m['kendall_tau']:.3f}", err=True)
        click.echo(f"cross-validating models on {int(round(len(data) * (1 - test_fraction)))} archs ...", err=True)
    pred, report = train_predictor(data, space, model, test_fraction=test_fraction, seed=seed, folds=folds,
                                   layer_table=table, params=params, on_cv=on_cv)
    pred.save(out)
    report.update({"out": str(out), "space": space.name, "device_id": data.device_id,
                   "device_name": data.device_name, "source": data.source})
    if as_json:
        return echo_json(report)
    click.echo(f"{report['model']} on {space.name}: trained on {report['n_train']} archs, "
               f"held out {report['n_test']} ({data.source})")
    click.echo("held-out: " + _metrics_line(report["test_metrics"]))
    click.echo(f"saved {out}")


def _layer_table(db, space, device):
    from hwnas.errors import PredictorError
    from hwnas.profiling.store import LatencyStore

    if db is None:
        raise PredictorError("model 'lut' needs --db with per-layer latencies ('hwnas profile --layers')")
    with LatencyStore(db, create=False) as store:
        return store.layer_table(space, device)


@predictor.command("eval")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Latency store to evaluate on.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="CSV with arch, latency_ms.")
@click.option("--device", default=None, help="Device in --db (default: the only one).")
@click.option("--force", is_flag=True, help="Use the predictor even for another space or device.")
@json_option
def eval_cmd(path, db, csv_path, device, force, as_json):
    """Metrics of a saved predictor on measured data."""
    from hwnas.predictors import load_predictor, read_meta

    meta = read_meta(path)
    data = _load_data(db, csv_path, meta["space"], device)
    fp = data.fingerprint or ({"device_id": data.device_id} if data.device_id else None)
    pred = load_predictor(path, space=data.space, fingerprint=fp, force=force)
    metrics = pred.score(list(data.archs), data.latency_ms)
    out = {"predictor": str(path), "model": pred.name, "space": pred.space_name, "source": data.source,
           "device_id": data.device_id, "metrics": metrics}
    if as_json:
        return echo_json(out)
    click.echo(f"{pred.name} ({path}) on {len(data)} archs of {data.source}:")
    click.echo(_metrics_line(metrics))


@predictor.command("predict")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--arch", "archs", multiple=True, required=True, help="Canonical arch string (repeatable).")
@click.option("--space", "space_name", default=None, help="Space YAML file, if the predictor's space is not built in.")
@json_option
def predict_cmd(path, archs, space_name, as_json):
    """Predicted latency (ms) of architectures."""
    from hwnas.predictors import load_predictor

    pred = load_predictor(path, space=_space(space_name) if space_name else None)
    parsed = [pred.space.parse(a) for a in archs]
    if pred.supports_std:
        mean, std = pred.predict_with_std(parsed)
    else:
        mean, std = pred.predict(parsed), [None] * len(parsed)
    rows = [{"arch": str(a), "latency_ms": float(m), "std_ms": None if s is None else float(s)}
            for a, m, s in zip(parsed, mean, std)]
    if as_json:
        return echo_json(rows)
    for r in rows:
        extra = "" if r["std_ms"] is None else f" +- {r['std_ms']:.4f}"
        click.echo(f"{r['latency_ms']:.4f}{extra} ms  {r['arch']}")


@predictor.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
def show(path, as_json):
    """What a saved predictor is: model, space, device, training size, held-out metrics."""
    from hwnas.predictors import read_meta

    meta = read_meta(path)
    meta.pop("train_archs", None)
    meta.pop("decisions", None)
    if as_json:
        return echo_json(meta)
    click.echo(f"{meta['model']} predictor for space {meta['space']} (hwnas {meta['hwnas_version']}, {meta['created']})")
    click.echo(f"device: {meta.get('device_name') or '?'} (id {meta.get('device_id')})")
    click.echo(f"trained on {meta['n_train']} archs; encoding {meta['encoding']}")
    held = (meta.get("metrics") or {}).get("heldout")
    if held:
        click.echo("held-out: " + _metrics_line({k: (float("nan") if v is None else v) for k, v in held.items()}))
