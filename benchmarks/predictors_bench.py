"""Latency-predictor benchmark: encodings, learning curves, active vs random sampling, throughput.

Usage (from the repository root)::

    .venv/bin/python benchmarks/predictors_bench.py \
        --data tiny=data/latency/tiny_cpu.csv --data fbnet=data/latency/fbnet224_cpu.csv \
        [--layers-db tiny=layers.db] [--repeats 2] [--out benchmarks/results/predictors.md]

Protocol (issue 4): per dataset, 20% of the archs are held out once (seeded) and every model
is scored on that same held-out set; training sets of 25, 50, 100, 200, 400, 800 archs (capped
by the pool) are drawn from the rest, ``--repeats`` times with different seeds, and the mean is
reported.  Active sampling starts from 25 random archs and grows the set with
``select_uncertain`` picking from the unlabelled rest of the train pool (the labels are the
measured latencies: a simulation of ``hwnas profile --active`` on data measured already).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from hwnas.predictors import (candidate, create_predictor, read_latency_csv, regression_metrics, select_model,
                              select_uncertain, split_rows)
from hwnas.space import get_space

SIZES = (25, 50, 100, 200, 400, 800)
#: ``auto`` candidate labels (``ridge:raw`` is ridge on raw ms), plus ``rf``, ``auto`` itself and the
#: measured ``lut`` where a layer table is given
MODELS = ("additive", "ridge", "ridge:raw", "gbr", "rf", "xgb", "mlp", "ensemble", "hybrid", "auto", "lut")
ENCODINGS = ("onehot", "factorized", "onehot+totals", "onehot+layercost", "onehot+layercost+totals",
             "factorized+layercost+totals")


def build(label, space, seed, table=None, **extra):
    """An unfitted predictor for a benchmark label (``rf`` is not an auto candidate)."""
    if label == "rf":
        return create_predictor("rf", space, seed=seed, **extra)
    model, params = candidate(label, table)
    return create_predictor(model, space, seed=seed, **{**params, **extra})


def fit_score(name, space, archs, y, test_archs, test_y, seed, table=None, **params):
    """Fit ``name`` (``auto``: 5-fold CV over the candidates on this training set, as the CLI
    does) and score it on the held-out archs, with the coverage of its 80% / 95% intervals."""
    from hwnas.predictors import coverage

    t0 = time.perf_counter()
    chosen = name
    if name.startswith("auto"):  # "auto" picks by within10, "auto:tau" / "auto:mape" by that metric
        metric = name.partition(":")[2] or "within10"
        chosen, _ = select_model(space, archs, y, seed=seed, table=table, metric=metric)
    p = build(chosen, space, seed, table, **params).fit(archs, y)
    fit_s = time.perf_counter() - t0
    predicted = p.predict(test_archs)
    m = regression_metrics(test_y, predicted)
    if len(p.residuals_) >= 2:
        m.update(coverage(p, test_archs, test_y, predicted_ms=predicted))
    m["fit_s"] = fit_s
    if name.startswith("auto"):
        m["picked"] = chosen
    return p, m


def encoding_study(space, train, test, seed):
    """Which encoding and which target transform help (at the largest training size)."""
    rows = []
    for name in ("ridge", "xgb", "mlp"):
        for enc in ENCODINGS:
            for log_target in (True, False):
                _, m = fit_score(name, space, train[0], train[1], test[0], test[1], seed,
                                 encoding=enc, log_target=log_target)
                rows.append({"model": name, "encoding": enc, "log_target": log_target, **m})
                print(f"  enc {name:6s} {enc:28s} log={log_target!s:5s} w10={m['within_10']:.3f} "
                      f"tau={m['kendall_tau']:.3f}", flush=True)
    return rows


def learning_curve(space, pool, test, models, sizes, repeats, lut_table):
    rows = []
    for size in sizes:
        for name in models:
            if name == "lut" and lut_table is None:
                continue
            ms = []
            for r in range(repeats):
                sub = np.random.default_rng(100 + r).permutation(len(pool[0]))[:size]
                _, m = fit_score(name, space, [pool[0][i] for i in sub], pool[1][sub], test[0], test[1], r,
                                 table=lut_table)
                ms.append(m)
            keys = ("within_5", "within_10", "kendall_tau", "mape", "fit_s", "in_80", "in_95")
            row = {"model": name, "size": size, **{k: float(np.nanmean([m.get(k, np.nan) for m in ms])) for k in keys}}
            if name.startswith("auto"):
                row["picked"] = [m["picked"] for m in ms]
            rows.append(row)
            print(f"  lc {name:8s} n={size:4d} w10={row['within_10']:.3f} tau={row['kendall_tau']:.3f} "
                  f"fit={row['fit_s']:.1f}s", flush=True)
    return rows


def active_curve(space, pool, test, name, sizes, seed):
    """Active (select_uncertain) vs random growth of the training set for one model."""
    rows = []
    archs, y = pool
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(archs))
    rand_set = list(order[: sizes[0]])
    act_set = list(order[: sizes[0]])
    for size in sizes:
        for mode, chosen in (("random", rand_set), ("active", act_set)):
            if len(chosen) < size:
                if mode == "random":
                    rest = [i for i in order if i not in set(chosen)]
                    chosen += rest[: size - len(chosen)]
                else:
                    p = build(name, space, seed).fit([archs[i] for i in chosen], y[chosen], uncertainty=False)
                    left = [i for i in range(len(archs)) if i not in set(chosen)]
                    picked = select_uncertain(p, [archs[i] for i in left], size - len(chosen), seed=seed)
                    pos = {a: i for i, a in zip(left, [archs[i] for i in left])}
                    chosen += [pos[str(a)] for a in picked]
            _, m = fit_score(name, space, [archs[i] for i in chosen], y[chosen], test[0], test[1], seed)
            rows.append({"model": name, "mode": mode, "size": size, "within_10": m["within_10"],
                         "kendall_tau": m["kendall_tau"]})
            print(f"  active {name:6s} {mode:6s} n={size:4d} w10={m['within_10']:.3f} tau={m['kendall_tau']:.3f}",
                  flush=True)
    return rows


def throughput(space, models, pool, lut_table, n=10_000):
    """Predictions per second on ``n`` archs in one batch (best of 3), plus the soft path."""
    import torch

    archs = [space.sample(np.random.default_rng(7 + i)) for i in range(n)]
    out = []
    for name in models:
        if (name == "lut" and lut_table is None) or name.startswith("auto"):
            continue
        p = build(name, space, 0, lut_table).fit(pool[0][:200], pool[1][:200], uncertainty=False)
        best = min(_timed(lambda: p.predict(archs)) for _ in range(3))
        idx = np.array([space.indices(a) for a in archs])
        best_idx = min(_timed(lambda: p.predict(idx)) for _ in range(3))
        row = {"model": name, "archs": n, "per_s": n / best, "per_s_index_array": n / best_idx}
        if p.differentiable:
            probs = [torch.full((len(d.choices),), 1.0 / len(d.choices), requires_grad=True) for d in space.decisions]

            def soft():
                p.expected_latency_torch(probs).backward()

            row["soft_forward_backward_ms"] = 1000 * min(_timed(soft) for _ in range(20))
        out.append(row)
        print(f"  thr {name:8s} {row['per_s']:,.0f}/s (Arch list), {row['per_s_index_array']:,.0f}/s (index array)",
              flush=True)
    return out


def remeasure(space, test, n, seed):
    """Measure ``n`` held-out archs again, now, with the dataset's protocol: the share that
    agrees with the stored number within +-10% is the ceiling any predictor can reach on
    this data (a predictor cannot be closer to a number than the number is to itself)."""
    from hwnas.profiling.campaign import CampaignConfig, measure_arch

    cfg = CampaignConfig(space=space.name, num_archs=n)
    rows = np.random.default_rng(seed).permutation(len(test[0]))[:n]
    again = np.array([measure_arch(space.name, test[0][i], cfg)["median_ms"] for i in rows], dtype=np.float64)
    stored = test[1][rows]
    m = regression_metrics(stored, again)
    print(f"  remeasure n={n}: within_10={m['within_10']:.3f} within_5={m['within_5']:.3f} "
          f"tau={m['kendall_tau']:.3f}", flush=True)
    return {"n": n, **m}


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_dataset(key, path, space, lut_table, args):
    data = read_latency_csv(path, space)
    tr, te = split_rows(len(data), 0.2, args.seed)
    pool = ([data.archs[i] for i in tr], data.latency_ms[tr])
    test = ([data.archs[i] for i in te], data.latency_ms[te])
    sizes = [s for s in SIZES if s <= len(tr)] + ([len(tr)] if len(tr) not in SIZES and len(tr) < SIZES[-1] else [])
    print(f"{key}: {len(data)} archs ({len(tr)} train pool, {len(te)} held out); sizes {sizes}", flush=True)
    res = {"dataset": key, "path": str(path), "space": space.name, "n_archs": len(data), "n_pool": len(tr),
           "n_test": len(te), "device_id": data.device_id, "device_name": data.device_name,
           "latency_range_ms": [float(data.latency_ms.min()), float(data.latency_ms.max())],
           "sizes": sizes, "lut": lut_table is not None}
    if args.remeasure:
        res["remeasure"] = remeasure(space, test, min(args.remeasure, len(te)), args.seed)
    if not args.skip_encoding:
        res["encodings"] = encoding_study(space, pool, test, args.seed)
    res["learning_curve"] = learning_curve(space, pool, test, args.models, sizes, args.repeats, lut_table)
    act_sizes = [s for s in sizes if s <= args.active_max]
    res["active"] = [r for name in args.active_models for r in active_curve(space, pool, test, name, act_sizes, args.seed)
                     ] if act_sizes else []
    res["throughput"] = throughput(space, args.models, pool, lut_table)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="SPACE=CSV (repeatable)")
    ap.add_argument("--layers-db", action="append", default=[], help="SPACE=DB with per-layer latencies (lut)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--active-models", nargs="+", default=["rf", "ridge", "mlp"])
    ap.add_argument("--active-max", type=int, default=400)
    ap.add_argument("--skip-encoding", action="store_true")
    ap.add_argument("--remeasure", type=int, default=0, help="re-measure N held-out archs (noise ceiling)")
    ap.add_argument("--json", default="benchmarks/results/predictors.json")
    ap.add_argument("--tables", default="benchmarks/results/predictors_tables.md")
    args = ap.parse_args()
    layer_dbs = dict(s.split("=", 1) for s in args.layers_db)
    t0 = time.time()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
               "loadavg_start": list(__import__("os").getloadavg()), "datasets": []}
    for item in args.data:
        key, path = item.split("=", 1)
        space = get_space(key.split("_")[0] if key not in ("tiny", "fbnet", "fbnetv2") else key)
        table = None
        if key in layer_dbs:
            from hwnas.profiling.store import LatencyStore

            with LatencyStore(layer_dbs[key], create=False) as store:
                table = store.layer_table(space.name)
                results.setdefault("layer_tables", {})[key] = {
                    "db": layer_dbs[key], "entries": len(table), "devices": store.devices()}
        results["datasets"].append(run_dataset(key, path, space, table, args))
    results["wall_s"] = time.time() - t0
    results["loadavg_end"] = list(__import__("os").getloadavg())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    Path(args.tables).write_text(render(results))
    print(f"wrote {args.json} and {args.tables} in {results['wall_s']:.0f}s")


def render(results: dict) -> str:
    """Markdown tables of a results JSON (the prose around them is written by hand)."""
    out = []
    for ds in results["datasets"]:
        out.append(f"### {ds['dataset']}: {ds['n_archs']} archs ({ds['n_pool']} train pool, {ds['n_test']} held out), "
                   f"{ds['latency_range_ms'][0]:.3f}-{ds['latency_range_ms'][1]:.3f} ms, device {ds['device_name']} "
                   f"({ds['device_id']})\n")
        if "remeasure" in ds:
            r = ds["remeasure"]
            out.append(f"Re-measuring {r['n']} held-out archs now vs the stored number: within +-10% "
                       f"{100 * r['within_10']:.0f}%, within +-5% {100 * r['within_5']:.0f}%, Kendall tau "
                       f"{r['kendall_tau']:.3f}, MAPE {100 * r['mape']:.1f}% (the ceiling for any predictor).\n")
        lc = ds["learning_curve"]
        models = list(dict.fromkeys(r["model"] for r in lc))
        sizes = ds["sizes"]
        for metric, label in (("within_10", "within +-10% (share of held-out archs)"), ("kendall_tau", "Kendall tau")):
            out.append(f"Learning curve, {label}, mean of the repeats:\n")
            out.append("| model | " + " | ".join(f"n={s}" for s in sizes) + " |")
            out.append("|---|" + "---:|" * len(sizes))
            for m in models:
                cells = {r["size"]: r[metric] for r in lc if r["model"] == m}
                out.append(f"| {m} | " + " | ".join(f"{cells[s]:.3f}" if s in cells else "-" for s in sizes) + " |")
            out.append("")
        for label in dict.fromkeys(r["model"] for r in lc if r["model"].startswith("auto")):
            picks = {r["size"]: r["picked"] for r in lc if r["model"] == label}
            out.append(f"`{label}` picked (one per repeat): " + "; ".join(
                f"n={n}: {', '.join(p)}" for n, p in picks.items()) + "\n")
        top = sizes[-1]
        cov = [r for r in lc if r["size"] == top and np.isfinite(r.get("in_80", np.nan))]
        if cov:
            out.append(f"Held-out coverage of the predictive intervals at n={top} (ideal 0.80 / 0.95):\n")
            out.append("| model | inside 80% interval | inside 95% interval |")
            out.append("|---|---:|---:|")
            out += [f"| {r['model']} | {r['in_80']:.3f} | {r['in_95']:.3f} |" for r in cov]
            out.append("")
        if ds.get("active"):
            out.append("Active (select_uncertain) vs random sampling, within +-10% / Kendall tau:\n")
            act_sizes = sorted({r["size"] for r in ds["active"]})
            out.append("| model | mode | " + " | ".join(f"n={s}" for s in act_sizes) + " |")
            out.append("|---|---|" + "---:|" * len(act_sizes))
            for m in dict.fromkeys(r["model"] for r in ds["active"]):
                for mode in ("random", "active"):
                    cells = {r["size"]: r for r in ds["active"] if r["model"] == m and r["mode"] == mode}
                    out.append(f"| {m} | {mode} | " + " | ".join(
                        f"{cells[s]['within_10']:.3f} / {cells[s]['kendall_tau']:.3f}" for s in act_sizes) + " |")
            out.append("")
        if ds.get("encodings"):
            out.append("Encodings and target transform (train pool size, one seed), within +-10% / Kendall tau:\n")
            out.append("| model | encoding | log target | raw target |")
            out.append("|---|---|---:|---:|")
            for m in dict.fromkeys(r["model"] for r in ds["encodings"]):
                for enc in dict.fromkeys(r["encoding"] for r in ds["encodings"]):
                    c = {r["log_target"]: r for r in ds["encodings"] if r["model"] == m and r["encoding"] == enc}
                    out.append(f"| {m} | {enc} | " + " | ".join(
                        f"{c[t]['within_10']:.3f} / {c[t]['kendall_tau']:.3f}" for t in (True, False)) + " |")
            out.append("")
        out.append("Throughput, one batch of 10,000 archs (best of 3):\n")
        out.append("| model | predictions/s (Arch list) | predictions/s (index array) | soft fwd+bwd (ms) |")
        out.append("|---|---:|---:|---:|")
        for r in ds["throughput"]:
            soft = f"{r['soft_forward_backward_ms']:.2f}" if "soft_forward_backward_ms" in r else "-"
            out.append(f"| {r['model']} | {r['per_s']:,.0f} | {r['per_s_index_array']:,.0f} | {soft} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
