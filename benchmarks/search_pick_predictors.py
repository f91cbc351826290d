"""Would another predictor have erred less on the archs the searches picked?

``search_retime.py`` showed that a search benchmark's final archs re-time as they measured,
so the misses against "measured within +-10% of predicted" are the predictor's.  This script
fits each predictor model on the benchmark's own 250 training rows (the MLP the searches
used, and the others) and scores it on the 25 picked archs, against their fresh re-timing
(``now_ms``), beside its random held-out split.

Caveat, which this cannot remove: the picks were chosen *by the MLP*, so they carry the MLP's
winner's curse and not the others'; a model that looks better here would pick other archs,
with errors of its own.  It says whether the picked region is predictable, not what a search
with that model would give.

    .venv/bin/python benchmarks/search_pick_predictors.py --retime benchmarks/results/search_m1_retime.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ("mlp", "xgb", "gbr", "rf", "ridge", "additive", "ensemble", "hybrid")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retime", type=Path, required=True, help="a search_retime.py results .json")
    ap.add_argument("--out", type=Path, default=None, help="default: <retime>_predictors.md")
    a = ap.parse_args(argv)

    from hwnas.predictors import create_predictor, regression_metrics, split_rows
    from hwnas.profiling.store import LatencyStore
    from hwnas.space import get_space

    rt = json.loads(a.retime.read_text())
    run = json.loads(Path(rt["run"]).read_text())
    work = Path(run["runs"][0]["out"]).parent
    space = get_space("tiny")
    with LatencyStore(work / "latency.db") as store:
        data = store.dataset("tiny")
    archs = [space.parse(x) for x in data.archs]
    y = np.asarray(data.latency_ms, dtype=float)
    picks = [space.parse(r["arch"]) for r in rt["finals"]]
    now = np.array([r["now_ms"] for r in rt["finals"]])
    tr, te = split_rows(len(archs), 0.2, 0)
    L = ["# Predictors on the archs the searches picked", "",
         f"`benchmarks/search_pick_predictors.py --retime {a.retime}`: each model fitted on the search benchmark's "
         f"{len(archs)} training rows (held-out: 80/20 split, seed 0, as the benchmark's), then on all of them and "
         f"scored on the {len(picks)} final archs against their fresh re-timing. The picks were chosen by the MLP "
         "(see the script's docstring).", "",
         "| model | held-out within +-10% | held-out MAPE | picks within +-10% | picks MAPE | picks median predicted/now |",
         "|---|---:|---:|---:|---:|---:|"]
    res = {}
    for name in MODELS:
        held = regression_metrics(y[te], create_predictor(name, space=space).fit([archs[i] for i in tr], y[tr])
                                  .predict([archs[i] for i in te]))
        pred = np.asarray(create_predictor(name, space=space).fit(archs, y).predict(picks), dtype=float)
        err = pred / now - 1
        res[name] = {"held_out": held, "picks_within_10": float((abs(err) <= 0.10).mean()),
                     "picks_mape": float(abs(err).mean()), "picks_median_ratio": float(np.median(pred / now))}
        L.append(f"| {name} | {100 * held['within_10']:.0f}% | {100 * held['mape']:.1f}% | "
                 f"{100 * res[name]['picks_within_10']:.0f}% | {100 * res[name]['picks_mape']:.1f}% | "
                 f"{res[name]['picks_median_ratio']:.3f} |")
        print(L[-1], flush=True)
    path = a.out or a.retime.with_name(a.retime.stem + "_predictors.md")
    path.write_text("\n".join(L) + "\n")
    path.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
