"""Train and ship the default predictor for the ``tiny`` space: ``data/predictors/tiny_cpu.hwp``.

The MLP, because the search needs the differentiable model (``expected_latency_torch``).
Trained exactly as ``hwnas predictor train --csv data/latency/tiny_cpu.csv --space tiny
--model mlp`` does (80% train, 20% held out, seed 0; the held-out metrics are stored in the
file).  The CSV's ``# fingerprint`` line (``hwnas data export``) gives the predictor its
device's full fingerprint and canary reference, so a search or export on another machine
can say how it differs, and one on this machine can scale its measurement the same way.

    .venv/bin/python benchmarks/predictors_ship.py [--csv ...] [--out ...] [--png ...]

It also writes the predicted-vs-measured scatter plot of the 200 held-out archs
(``benchmarks/results/predictor_tiny_scatter.png`` by default), the plot
``hwnas predictor eval --png`` draws.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwnas.predictors import load_predictor, read_latency_csv, split_rows, train_predictor
from hwnas.predictors.plot import scatter_png
from hwnas.space import get_space


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/latency/tiny_cpu.csv")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--out", default="data/predictors/tiny_cpu.hwp")
    ap.add_argument("--png", default="benchmarks/results/predictor_tiny_scatter.png")
    args = ap.parse_args()
    space = get_space(args.space)
    data = read_latency_csv(args.csv, space)
    if not (data.fingerprint or {}).get("canary"):
        raise SystemExit(f"{args.csv} carries no canary fingerprint line; export it with 'hwnas data export'")
    pred, report = train_predictor(data, space, args.model, test_fraction=0.2, seed=0)
    pred.save(args.out)
    _, te = split_rows(len(data), 0.2, 0)  # the held-out rows train_predictor used
    held = data.subset(te)
    scatter_png(args.png, held.latency_ms, pred.predict(list(held.archs)), metrics=report["test_metrics"],
                title=f"{Path(args.out).name}: {len(held)} held-out archs")
    back = load_predictor(args.out, space=space)
    print(json.dumps({"out": args.out, "device_id": back.device_id, "device_name": back.device_name,
                      "cpu_model": (back.fingerprint or {}).get("cpu_model"),
                      "canary_reference_ms": back.fingerprint["canary"]["reference_ms"], "n_train": back.n_train_,
                      "heldout": report["test_metrics"]}, indent=1))


if __name__ == "__main__":
    main()
