"""Train and ship the default predictor for the ``tiny`` space: ``data/predictors/tiny_cpu.hwp``.

The MLP, because the search needs the differentiable model (``expected_latency_torch``).
Trained exactly as ``hwnas predictor train --csv data/latency/tiny_cpu.csv --space tiny
--model mlp`` does (80% train, 20% held out, seed 0; the held-out metrics are stored in the
file).  The CSV records only the device id and name; when this machine has the same device
id (the dataset was profiled here), its full fingerprint is attached so ``load_predictor``
can name the fields that differ on another machine.

    .venv/bin/python benchmarks/predictors_ship.py [--csv ...] [--out ...]
"""
from __future__ import annotations

import argparse
import json

from hwnas.predictors import load_predictor, read_latency_csv, train_predictor
from hwnas.space import get_space


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default="data/latency/tiny_cpu.csv")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--out", default="data/predictors/tiny_cpu.hwp")
    ap.add_argument("--repeats", type=int, default=3, help="sessions per arch of the CSV's protocol (hwnas profile --repeats)")
    args = ap.parse_args()
    space = get_space(args.space)
    data = read_latency_csv(args.csv, space)
    pred, report = train_predictor(data, space, args.model, test_fraction=0.2, seed=0)
    from hwnas.profiling.fingerprint import device_fingerprint

    # the CSV carries only the device id: attach the full fingerprint when this is that device
    here = device_fingerprint("cpu", threads=1, repeats=args.repeats)
    if here["device_id"] == data.device_id:
        pred.fingerprint = here
    else:
        print(f"no fingerprint attached: this machine is device {here['device_id']}, the CSV's is {data.device_id}")
    pred.save(args.out)
    back = load_predictor(args.out, space=space)
    print(json.dumps({"out": args.out, "device_id": back.device_id, "device_name": back.device_name,
                      "cpu_model": (back.fingerprint or {}).get("cpu_model"), "n_train": back.n_train_,
                      "heldout": report["test_metrics"]}, indent=1))


if __name__ == "__main__":
    main()
