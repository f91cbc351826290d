"""``hwnas predictor``: train, evaluate and query latency predictors (thin over hwnas.predictors)."""
from __future__ import annotations


import click

from hwnas.cli._common import echo_json, json_option

_MODELS_HELP = ("mlp|xgb|gbr|rf|ridge|additive|hybrid|lut|ensemble|auto (auto: k-fold CV on the train split "
                "over the lookup tables, ridge raw and log, gbr, xgb, mlp, ensemble and hybrid)")


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
    line = (f"RMSE {m['rmse_ms']:.4f} ms  MAPE {100 * m['mape']:.1f}%  within 5% {100 * m['within_5']:.1f}%  "
            f"within 10% {100 * m['within_10']:.1f}%  Kendall tau {tau:.3f}  Spearman rho {rho:.3f}  (n={m['n']})")
    if m.get("in_80") is not None:
        line += f"\n  intervals: {100 * m['in_80']:.0f}% inside the 80% interval, {100 * m['in_95']:.0f}% inside the 95% one"
    return line


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
@click.option("--metric", type=click.Choice(["within10", "tau", "mape"]), default="within10", show_default=True,
              help="What --model auto picks by (tau: ranking, what a search needs).")
@click.option("--candidates", default=None, metavar="A,B,...",
              help="With --model auto: compare only these (default: all of additive, ridge, ridge:raw, gbr, "
                   "xgb, mlp, ensemble, hybrid, plus lut where --db has a layer table).")
@json_option
def train(db, csv_path, space_name, device, model, out, test_fraction, seed, folds, encoding, metric, candidates,
          as_json):
    """Fit a predictor on a train split and report held-out metrics (and, for auto, the CV table)."""
    from hwnas.predictors import train_predictor

    data = _load_data(db, csv_path, space_name, device)
    space = _space(space_name or data.space)
    table = _optional_layer_table(db, space.name, data.device_id) if model in ("auto", "hybrid") else None
    if model == "lut":
        table = _layer_table(db, space.name, data.device_id)
    params = {"encoding": encoding} if encoding else {}
    on_cv = None
    if not as_json and model == "auto":
        on_cv = lambda name, m: click.echo(f"  cv {name:10s} within 10% {100 * m['within_10']:5.1f}%  "  # noqa: E731
                                           f"MAPE {100 * m['mape']:4.1f}%  tau {m['kendall_tau']:.3f}", err=True)
        click.echo(f"cross-validating models on {int(round(len(data) * (1 - test_fraction)))} archs "
                   f"({folds} folds, picking by {metric}) ...", err=True)
    labels = _candidates(candidates, model, table)
    pred, report = train_predictor(data, space, model, test_fraction=test_fraction, seed=seed, folds=folds,
                                   layer_table=table, params=params, on_cv=on_cv, metric=metric, candidates=labels)
    pred.save(out)
    report.update({"out": str(out), "space": space.name, "device_id": data.device_id,
                   "device_name": data.device_name, "source": data.source})
    if as_json:
        return echo_json(report)
    if "candidate" in report:
        click.echo(f"auto picked {report['candidate']} ({report['selected_by']})")
    click.echo(f"{report['model']} on {space.name}: trained on {report['n_train']} archs, "
               f"held out {report['n_test']} ({data.source})")
    click.echo("held-out: " + _metrics_line(report["test_metrics"]))
    click.echo(f"saved {out}")


def _candidates(spec, model, table):
    """The --candidates labels, each checked (before any fit)."""
    if spec is None:
        return None
    if model != "auto":
        raise click.UsageError("--candidates only applies with --model auto")
    from hwnas.predictors import candidate

    labels = [c.strip() for c in spec.split(",") if c.strip()]
    if not labels:
        raise click.UsageError("--candidates needs at least one model label")
    for label in labels:
        candidate(label, table)
    if "lut" in labels and not table:
        raise click.UsageError("--candidates lut needs --db with per-layer latencies ('hwnas profile --layers')")
    return labels


def _optional_layer_table(db, space, device) -> dict | None:
    """The measured per-layer table where --db has one (auto and hybrid use it), else None."""
    from hwnas.errors import HwnasError

    if db is None:
        return None
    try:
        return _layer_table(db, space, device) or None
    except HwnasError:
        return None


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
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also write a predicted-vs-measured scatter plot (PNG) here.")
@json_option
def eval_cmd(path, db, csv_path, device, force, png, as_json):
    """Metrics of a saved predictor on measured data, with the coverage of its intervals.

    Archs the predictor was trained on are scored too (say so with a held-out set)."""
    from hwnas.predictors import coverage, load_predictor, read_meta, regression_metrics

    meta = read_meta(path)
    data = _load_data(db, csv_path, meta["space"], device)
    fp = data.fingerprint or ({"device_id": data.device_id} if data.device_id else None)
    pred = load_predictor(path, space=data.space, fingerprint=fp, force=force)
    archs = list(data.archs)
    predicted = pred.predict(archs)
    metrics = regression_metrics(data.latency_ms, predicted)
    if len(getattr(pred, "residuals_", ())) >= 2:
        metrics.update(coverage(pred, archs, data.latency_ms, predicted_ms=predicted))
    seen = set(pred.train_archs_) & set(archs)
    out = {"predictor": str(path), "model": pred.name, "space": pred.space_name, "source": data.source,
           "device_id": data.device_id, "metrics": metrics, "n_trained_on": len(seen)}
    if png:
        from hwnas.predictors.plot import scatter_png

        out["png"] = scatter_png(png, data.latency_ms, predicted,
                                 title=f"{pred.name} on {len(archs)} archs of {data.source}", metrics=metrics)
    if as_json:
        return echo_json(out)
    click.echo(f"{pred.name} ({path}) on {len(data)} archs of {data.source}:")
    click.echo(_metrics_line(metrics))
    if seen:
        click.echo(f"note: {len(seen)} of these archs are in the predictor's training set; "
                   "they flatter the figures")
    if png:
        click.echo(f"wrote {png}")


@predictor.command("predict")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--arch", "archs", multiple=True, required=True, help="Canonical arch string (repeatable).")
@click.option("--space", "space_name", default=None, help="Space YAML file, if the predictor's space is not built in.")
@click.option("--std", "with_std", is_flag=True,
              help="Also print the predictive standard deviation and the 80% interval.")
@click.option("--p-below", "budget", type=float, default=None, metavar="MS",
              help="Also print P(latency <= MS) for each arch.")
@json_option
def predict_cmd(path, archs, space_name, with_std, budget, as_json):
    """Predicted latency (ms) of architectures, optionally with how sure the predictor is.

    The uncertainty comes from the predictor's out-of-fold residuals (log scale): how far
    archs it had not seen landed from their predictions."""
    from hwnas.predictors import load_predictor

    pred = load_predictor(path, space=_space(space_name) if space_name else None)
    parsed = [pred.space.parse(a) for a in archs]
    mean = pred.predict(parsed)
    rows = [{"arch": str(a), "latency_ms": float(m)} for a, m in zip(parsed, mean)]
    if with_std:
        _, std = pred.predict_with_std(parsed)
        lo, hi = pred.predict_interval(parsed, 0.8)
        for r, s, a, b in zip(rows, std, lo, hi):
            r.update(std_ms=float(s), interval80_ms=[float(a), float(b)])
    if budget is not None:
        for r, p in zip(rows, pred.prob_within(parsed, budget)):
            r["p_below"] = float(p)
    if as_json:
        return echo_json(rows)
    for r in rows:
        extra = ""
        if with_std:
            extra += f" +- {r['std_ms']:.4f} (80%: {r['interval80_ms'][0]:.4f}-{r['interval80_ms'][1]:.4f})"
        if budget is not None:
            extra += f"  P(<= {budget:g} ms) {r['p_below']:.2f}"
        click.echo(f"{r['latency_ms']:.4f} ms{extra}  {r['arch']}")


@predictor.command("adapt")
@click.argument("base", type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Latency store of the NEW device.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="CSV of the new device (arch, latency_ms).")
@click.option("--device", default=None, help="Device in --db (default: the only one).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the adapted predictor.")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
def adapt_cmd(base, db, csv_path, device, out, seed, as_json):
    """Adapt a predictor of another device to a new one from a few of its measurements.

    BASE is a saved predictor (.hwp) of the same space, trained on another device.  The new
    device needs only a handful of measured archs (5-50; 'hwnas profile -n 20'): hwnas fits
    log latency = a + b log base + per-layer corrections, under priors that keep the base's
    ranking where the few samples are silent, and picks the priors' strength by
    leave-one-out.  The result carries the new device's fingerprint."""
    from hwnas.predictors import adapt_predictor, load_predictor, read_meta

    meta = read_meta(base)
    data = _load_data(db, csv_path, meta["space"], device)
    base_pred = load_predictor(base, space=data.space)  # another device is the point: no fingerprint check
    pred = adapt_predictor(base_pred, data, seed=seed)
    pred.save(out)
    info = pred.describe()
    report = {"out": str(out), "base": str(base), "base_device": meta.get("device_name") or meta.get("device_id"),
              "device_id": data.device_id, "device_name": data.device_name, "n_target": len(data),
              "prior": info["prior"], "loo_metrics": pred.metrics_["loo"], "source": data.source}
    if as_json:
        return echo_json(report)
    prior = info["prior"]
    click.echo(f"adapted {base} ({report['base_device'] or 'unnamed device'}) to "
               f"{data.device_name or data.device_id} from {len(data)} archs of {data.source}")
    click.echo(f"log latency = {prior['a']:.3f} + {prior['b']:.3f} log base + per-layer terms "
               f"(priors by leave-one-out: lambda_b {prior['lambda_b']:g}, lambda_w {prior['lambda_w']:g})")
    click.echo("leave-one-out: " + _metrics_line(pred.metrics_["loo"]))
    click.echo(f"saved {out}")


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
    if meta["model"] == "adapted":
        base = (meta.get("metrics") or {}).get("base_metrics") or {}
        click.echo(f"adapted from a predictor of another device ({meta['n_train']} archs measured here); "
                   f"leave-one-out here: " + _metrics_line((meta.get("metrics") or {}).get("loo") or {}))
        if base.get("heldout"):
            click.echo("base held-out (its own device): " + _metrics_line(base["heldout"]))
    held = (meta.get("metrics") or {}).get("heldout")
    if held:
        click.echo("held-out: " + _metrics_line({k: (float("nan") if v is None else v) for k, v in held.items()}))
