"""Would another predictor, or more profiled archs, have erred less on the archs the searches picked?

``search_retime.py`` showed that a search benchmark's final archs re-time as they measured,
so the misses against "measured within +-10% of predicted" are the predictor's.  This script
fits each predictor model on the benchmark's own training rows (the model the searches used,
and the others) and scores it on the picked archs, against their fresh re-timing
(``now_ms``), beside its random held-out split.  With ``--db`` (a store holding the
benchmark's rows and more archs of the space, profiled on the same device) every model is
also fitted on all of that store's rows: does a larger campaign fix the picks?

Caveat, which this cannot remove: the picks were chosen *by the benchmark's model*, so they
carry its winner's curse and not the others'; a model that looks better here would pick
other archs, with errors of its own.  It says whether the picked region is predictable, not
what a search with that model would give.

    .venv/bin/python benchmarks/search_pick_predictors.py --retime benchmarks/results/search_m1_retime.json
    .venv/bin/python benchmarks/search_pick_predictors.py --retime benchmarks/results/search_fbnetv2_cpu_retime.json \\
        --db /tmp/more/latency.db
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ("mlp", "xgb", "gbr", "rf", "ridge", "additive", "ensemble", "hybrid")


def rows_of(db: Path, space):
    """(parsed archs, latency_ms, device id) of ``space`` in the store ``db``."""
    from hwnas.profiling.store import LatencyStore

    with LatencyStore(db) as store:
        data = store.dataset(space.name)
    return [space.parse(x) for x in data.archs], np.asarray(data.latency_ms, dtype=float), data.device_id


def score(name, space, archs, y, picks, now):
    """Held-out metrics (80/20, seed 0, as the benchmark's split) and the errors on the picks
    of model ``name`` (``model`` or ``model:encoding``) fitted on (archs, y)."""
    from hwnas.predictors import create_predictor, regression_metrics, split_rows

    model, _, encoding = name.partition(":")
    kw = {"encoding": encoding} if encoding else {}
    tr, te = split_rows(len(archs), 0.2, 0)
    held = regression_metrics(y[te], create_predictor(model, space=space, **kw).fit([archs[i] for i in tr], y[tr])
                              .predict([archs[i] for i in te]))
    pred = np.asarray(create_predictor(model, space=space, **kw).fit(archs, y).predict(picks), dtype=float)
    err = pred / now - 1
    return {"rows": len(archs), "held_out": held, "picks_within_10": float((abs(err) <= 0.10).mean()),
            "picks_mape": float(abs(err).mean()), "picks_median_ratio": float(np.median(pred / now))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retime", type=Path, required=True, help="a search_retime.py results .json")
    ap.add_argument("--db", type=Path, default=None,
                    help="a store with the benchmark's rows and more archs of the space (same device)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated models, each MODEL or MODEL:ENCODING (e.g. xgb:factorized+totals)")
    ap.add_argument("--out", type=Path, default=None, help="default: <retime>_predictors.md")
    a = ap.parse_args(argv)

    from search_bench import bench_space

    rt = json.loads(a.retime.read_text())
    run = json.loads(Path(rt["run"]).read_text())
    work = Path(run["runs"][0]["out"]).parent
    space = bench_space(run["args"].get("space", "tiny"))
    bench = rows_of(work / "latency.db", space)
    sets = {"benchmark's": bench}
    if a.db is not None:
        more = sets["--db's"] = rows_of(a.db, space)
        if more[2] != bench[2]:
            raise SystemExit(f"error: --db {a.db} holds device {more[2]}, the benchmark's data device {bench[2]}: "
                             "the picks were timed on the latter")
        if not {str(x) for x in bench[0]} <= {str(x) for x in more[0]}:
            raise SystemExit(f"error: --db {a.db} lacks some of the benchmark's rows: give a store that extends them")
    picks = [space.parse(r["arch"]) for r in rt["finals"]]
    now = np.array([r["now_ms"] for r in rt["finals"]])
    used = run["args"].get("predictor_model", "mlp")
    L = ["# Predictors on the archs the searches picked", "",
         f"`benchmarks/search_pick_predictors.py --retime {a.retime}" + (f" --db {a.db}" if a.db else "") + "` "
         f"({space.name}): each model fitted on a set of rows (held-out: 80/20 split, seed 0, as the benchmark's), "
         f"then on all of them and scored on the {len(picks)} final archs against their fresh re-timing. The picks "
         f"were chosen by the benchmark's `{used}` (see the script's docstring)."
         + (f" `--db`: {len(more[0])} rows of the same device, the benchmark's {len(bench[0])} and more profiled "
            "after it." if a.db else ""), "",
         "| rows | model | held-out within +-10% | held-out MAPE | picks within +-10% | picks MAPE | "
         "picks median predicted/now |", "|---|---|---:|---:|---:|---:|---:|"]
    res = {}
    for set_name, (archs, y, _) in sets.items():
        for name in a.models.split(","):
            r = res.setdefault(set_name, {})[name] = score(name, space, archs, y, picks, now)
            L.append(f"| {set_name} {r['rows']} | {name} | {100 * r['held_out']['within_10']:.0f}% | "
                     f"{100 * r['held_out']['mape']:.1f}% | {100 * r['picks_within_10']:.0f}% | "
                     f"{100 * r['picks_mape']:.1f}% | {r['picks_median_ratio']:.3f} |")
            print(L[-1], flush=True)
    path = a.out or a.retime.with_name(a.retime.stem + "_predictors.md")
    path.write_text("\n".join(L) + "\n")
    path.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
