"""How far does the paired protocol agree with a bare ``perf_counter`` loop, and how far do
two bare loops agree with each other?

The canary benchmark's independent check (``canary_bench.py``) compares one paired campaign
with one round-robin loop over 10 archs: tiny met 5-6/10 within 5% on two hosts.  This one
asks what limits that figure.  Per space, 40 archs from the shipped dataset (seed 0) in four
groups of 10; ``--reps`` times, interleaved group by group:

- ``loop_cold``: a round-robin loop over the group's sessions, each visit one timed run (the
  canary benchmark's loop: every run follows another model's run);
- ``loop_warm``: the same loop, each visit an untimed run, then a timed one (every timed run
  follows its own model: steady state);
- ``paired``: production ``PairedTimer.measure`` (50 pairs against the space's canary), with
  three of its stored estimators: ``median_of_ratios`` (the default, every pair),
  ``warm_median_of_ratios`` and ``cold_median_of_ratios`` (``hwnas.profiling.paired.
  cache_context_ratios``).

Relative latency = latency / the geometric mean of its group (one loop's figures share that
loop's moment).  Reported: each method's agreement with itself across repeats (its noise
ceiling), each method against each loop's median over all repeats, and the log-log slope
between them (1 = the same relative scale; > 1 = a wider spread of relative latencies).

    python benchmarks/independent_loops.py --out benchmarks/results/independent_m1.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
from canary_bench import SHIPPED, _cfg, _read_csv

from hwnas.profiling.campaign import prepare_arch
from hwnas.profiling.canary import build_canary
from hwnas.profiling.fingerprint import device_fingerprint, device_name
from hwnas.profiling.paired import PairedTimer
from hwnas.profiling.providers import session_options

GROUP = 10
LOOP_VISITS = {"tiny": 200, "fbnet": 30}  # timed runs per arch in one loop (tiny ~0.3 ms, fbnet ~10 ms)
PAIRED = ("median_of_ratios", "warm_median_of_ratios", "cold_median_of_ratios")
METHODS = ("loop_cold", "loop_warm") + tuple(f"paired:{e}" for e in PAIRED)


def _session(data: bytes):
    import onnxruntime as ort

    s = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    feed = {inp.name: np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)}
    for _ in range(10):
        s.run(None, feed)
    return s, feed


def _loop(onnx: dict, visits: int, warm: bool) -> dict:
    """Median time (ms) of each model in one round-robin loop over all of them."""
    sessions = {a: _session(d) for a, d in onnx.items()}
    times = {a: [] for a in onnx}
    for _ in range(visits):
        for a, (s, feed) in sessions.items():
            if warm:
                s.run(None, feed)
            t0 = time.perf_counter()
            s.run(None, feed)
            times[a].append(time.perf_counter() - t0)
    return {a: float(np.median(t) * 1e3) for a, t in times.items()}


def measure(space: str, archs: list[str], reps: int) -> dict:
    onnx = {a: prepare_arch(space, a, _cfg(space, "plain"))[1] for a in archs}
    timer = PairedTimer(build_canary(space).onnx)
    groups = [archs[i:i + GROUP] for i in range(0, len(archs), GROUP)]
    out = {m: [{} for _ in range(reps)] for m in METHODS}
    wall = {m: 0.0 for m in ("loop_cold", "loop_warm", "paired")}
    for r in range(reps):
        for g in groups:
            sub = {a: onnx[a] for a in g}
            for m, warm in (("loop_cold", False), ("loop_warm", True)):
                t0 = time.perf_counter()
                out[m][r].update(_loop(sub, LOOP_VISITS[space], warm))
                wall[m] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for a in g:
                est = timer.measure(onnx[a], runs=50).estimates
                for e in PAIRED:
                    out[f"paired:{e}"][r][a] = est[e]
            wall["paired"] += time.perf_counter() - t0
        print(f"{space}: repeat {r + 1}/{reps} done", flush=True)
    return {"archs": archs, "groups": groups, "values": out, "wall_s": wall}


def _relative(values: dict, groups) -> np.ndarray:
    """log(latency / its group's geometric mean), groups concatenated."""
    return np.concatenate([np.log([values[a] for a in g]) - np.mean(np.log([values[a] for a in g])) for g in groups])


def _within(x, y, tol=0.05) -> float:
    return float(np.mean(np.abs(np.exp(x - y) - 1) <= tol))


def report(res: dict) -> dict:
    groups, vals = res["groups"], res["values"]
    rel = {m: [_relative(v, groups) for v in vals[m]] for m in METHODS}
    med = {m: np.median(rel[m], axis=0) for m in METHODS}
    reps = len(rel[METHODS[0]])
    rep = {}
    for m in METHODS:
        pairs = [(i, j) for i in range(reps) for j in range(i)]
        rep[m] = {"self_within_5": float(np.mean([_within(rel[m][i], rel[m][j]) for i, j in pairs]))}
        if m.startswith("paired"):  # the stored quantity is the ratio itself: how well it repeats
            a = [np.array([vals[m][i][x] for x in res["archs"]]) for i in range(reps)]
            rep[m]["ratio_repeat_within_5"] = float(np.mean([np.mean(np.abs(a[i] / a[j] - 1) <= 0.05)
                                                             for i, j in pairs]))
        for loop in ("loop_cold", "loop_warm"):
            rep[m][loop] = {"single_within_5": float(np.mean([_within(r, med[loop]) for r in rel[m]])),
                            "median_within_5": _within(med[m], med[loop]),
                            "slope": float(np.polyfit(med[loop], med[m], 1)[0])}
    return rep


def _markdown(all_res: dict, host: str, reps: int) -> str:
    L = ["# Independent agreement: the paired protocol against bare `perf_counter` loops", "",
         f"{datetime.date.today().isoformat()}, `{host}`, CPU EP, 1 thread, batch 1, `benchmarks/independent_loops.py`: "
         f"40 shipped archs per space in groups of 10, {reps} repeats interleaved group by group. "
         "`loop_cold` runs each file once per visit (the canary benchmark's loop); `loop_warm` runs it once untimed, "
         "then once timed. `paired:*` are three estimators of the same production `PairedTimer` sessions "
         "(50 pairs; the flipped order gives 24 warm and 24 cold pairs). Relative latency = latency / its group's "
         "geometric mean. *self*: one repeat against another, averaged over all pairs of repeats (the method's "
         "own noise ceiling). *vs loop*: one repeat (*single*), or the median over repeats (*median*), against "
         "that loop's median over repeats; *slope*: log-log slope against it.", ""]
    for sp, d in all_res.items():
        r = d["report"]
        L += [f"## {sp}", "",
              "| method | self within 5% | ratio repeats within 5% | vs loop_cold single / median / slope "
              "| vs loop_warm single / median / slope |", "|---|---:|---:|---:|---:|"]
        for m in METHODS:
            x = r[m]
            rr = f"{x['ratio_repeat_within_5']:.0%}" if "ratio_repeat_within_5" in x else "-"
            c, w = x["loop_cold"], x["loop_warm"]
            L.append(f"| {m} | {x['self_within_5']:.0%} | {rr} | {c['single_within_5']:.0%} / "
                     f"{c['median_within_5']:.0%} / {c['slope']:.3f} | {w['single_within_5']:.0%} / "
                     f"{w['median_within_5']:.0%} / {w['slope']:.3f} |")
        L += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in d["wall_s"].items()), ""]
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/independent.md")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--archs", type=int, default=40)
    ap.add_argument("--spaces", default="tiny,fbnet")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    host = device_name(device_fingerprint("cpu", threads=1, batch_size=1))
    all_res = {}
    for sp in a.spaces.split(","):
        archs = [str(x) for x in rng.choice(sorted(_read_csv(SHIPPED[sp])), size=a.archs, replace=False)]
        res = measure(sp, archs, a.reps)
        res["report"] = report(res)
        all_res[sp] = res
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps({"host": host, "reps": a.reps, "spaces": all_res}, indent=1))
    out.write_text(_markdown(all_res, host, a.reps))
    print(out.read_text())


if __name__ == "__main__":
    main()
