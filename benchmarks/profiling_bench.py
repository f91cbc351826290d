"""Profiling benchmark (issue 3): repeatability, overhead and agreement of the runner.

Batch 1, CPU EP, 1 intra-op thread, 10 warm-up + 50 timed runs per session:

1. repeatability, old protocol (one session per arch) vs the new default (``--repeats``
   sessions spread over a chunk, lowest median), on the same archs, interleaved:
   ``--tiny-archs`` tiny archs and ``--repeat-archs`` fbnet archs, each measured
   ``--trials`` times per protocol; CV of an arch's latency over the trials (goal: median
   CV <= 2%), share of re-measurements within +-10%, Kendall tau between trials;
2. overhead: a real (default-protocol) fbnet campaign of ``--campaign-archs`` archs; share of
   wall time not spent in timed runs (goal <= 25%), archs/min, and what the rest is;
3. agreement: for ``--agree-archs`` of those archs, the stored median vs an independent
   plain loop (``time.perf_counter`` around ``session.run``, same options, ONNX file on
   disk) (goal: within 3%).

Writes ``benchmarks/results/profiling.md`` and ``profiling.json``.  Run:
``.venv/bin/python benchmarks/profiling_bench.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.profiling.campaign import DEFAULT_CHUNK, DEFAULT_REPEATS, CampaignConfig, run_campaign
from hwnas.profiling.fingerprint import cpu_model
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.providers import session_options
from hwnas.profiling.runner import measure
from hwnas.profiling.sampling import sample_archs
from hwnas.profiling.store import LatencyStore
from hwnas.space import get_space

RESULTS = Path(__file__).resolve().parent / "results"


def _protocol_pass(models: list[bytes], repeats: int, chunk: int) -> tuple[list[float], float]:
    """One measurement of every model as a campaign does it: ``repeats`` rounds over chunks
    of ``chunk`` models, the lowest session median per model (repeats=1: the old protocol,
    one session).  Returns (latency per model, wall seconds)."""
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(models), chunk):
        part = models[i:i + chunk]
        meds = [[] for _ in part]
        for _ in range(repeats):
            for j, data in enumerate(part):
                meds[j].append(measure(data).median_ms)
        out += [min(m) for m in meds]
    return out, time.perf_counter() - t0


def repeatability(space, n_archs: int, trials: int, seed: int, repeats: int, chunk: int) -> dict:
    """Old protocol (1 session) vs the new default (``repeats`` spread sessions, min of
    medians) on the same archs, interleaved: each trial measures every arch with both
    protocols, the order of the two alternating between trials, so both see the same
    machine phases.  Per protocol: CV over the trials (per arch), the share of (trial i,
    trial j) pairs of an arch that agree within +-10% and +-5% (what "re-measuring agrees"
    means for a stored dataset), and Kendall tau between trials over the archs."""
    from itertools import combinations

    from scipy.stats import kendalltau

    models = [arch_to_onnx(space, a).SerializeToString()
              for a in sample_archs(space, n_archs, sampler="stratified", seed=seed)]
    protos = {"R=1": (1, chunk), f"R={repeats}": (repeats, chunk)}
    vals = {k: [] for k in protos}
    wall = {k: 0.0 for k in protos}
    for t in range(trials):
        order = list(protos) if t % 2 == 0 else list(protos)[::-1]
        for k in order:
            v, w = _protocol_pass(models, *protos[k])
            vals[k].append(v)
            wall[k] += w
    out = {"space": space.name, "archs": n_archs, "trials": trials, "chunk": chunk, "protocols": {}}
    for k, v in vals.items():
        x = np.asarray(v)  # trials x archs
        cv = x.std(axis=0, ddof=1) / x.mean(axis=0)
        rel = np.concatenate([np.abs(x[j] - x[i]) / x[i] for i, j in combinations(range(trials), 2)])
        taus = [kendalltau(x[i], x[j])[0] for i, j in combinations(range(trials), 2)]
        out["protocols"][k] = {
            "cv_median": float(np.median(cv)), "cv_p90": float(np.percentile(cv, 90)), "cv_max": float(cv.max()),
            "within_10": float(np.mean(rel <= 0.10)), "within_5": float(np.mean(rel <= 0.05)),
            "kendall_tau_mean": float(np.mean(taus)), "wall_s_per_arch": wall[k] / (trials * n_archs),
            "latency_range_ms": [float(x.min()), float(x.max())]}
    return out


def overhead(n_archs: int, seed: int, tmp: Path) -> tuple[dict, list[dict]]:
    with LatencyStore(tmp / "bench.db") as store:
        res = run_campaign(store, CampaignConfig(space="fbnet", num_archs=n_archs, seed=seed))
        rows = store.rows("fbnet", status="ok")
    parts = {k.replace("_ms", "_s"): float(np.sum([r[k] or 0.0 for r in rows])) / 1e3 for k in
             ("build_ms", "export_ms", "session_ms", "first_run_ms", "timed_total_ms")}
    # warm-up runs of every session of a row (repeats of them), at the row's median
    parts["warmup_runs_s"] = float(np.sum([(r["warmup"] - 1) * r["median_ms"] * json.loads(r["extra"] or "{}")
                                           .get("repeats", 1) for r in rows])) / 1e3
    accounted = sum(parts.values())
    parts["planning_and_store_s"] = res.wall_s - accounted
    out = {"archs": res.measured, "wall_s": res.wall_s, "timed_s": res.timed_s,
           "overhead_share": res.overhead_share, "archs_per_min": 60 * res.measured / res.wall_s,
           "breakdown_s": parts}
    return out, rows


def plain_loop(path: str, warmup: int = 10, runs: int = 50) -> float:
    """Independent reference: the simplest correct timing loop, nothing of ours but the
    session options (graph optimisation all, 1 intra-op thread, sequential)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, session_options(1), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(1).standard_normal(inp.shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def agreement(space, n: int, seed: int, tmp: Path) -> dict:
    """Each arch: a one-arch campaign into a store (the stored median: the lowest of its
    3 default sessions), then at once the plain loop on the same graph written to disk, as
    many times, the lowest median taken the same way.  Back to back, so that a change of
    the machine's load between the two is as unlikely as it can be on a shared machine."""
    diffs, pairs = [], []
    with LatencyStore(tmp / "agree.db") as store:
        for i in range(n):
            run_campaign(store, CampaignConfig(space="fbnet", num_archs=1, sampler="uniform", seed=seed + i))
            r = store.rows("fbnet", status="ok")[-1]
            path = tmp / "m.onnx"
            path.write_bytes(arch_to_onnx(space, r["arch"]).SerializeToString())
            ref = min(plain_loop(str(path)) for _ in range(json.loads(r["extra"])["repeats"]))
            diffs.append(abs(r["median_ms"] - ref) / ref)
            pairs.append((r["median_ms"], ref))
    d = np.array(diffs)
    return {"archs": len(d), "rel_diff_median": float(np.median(d)), "rel_diff_max": float(d.max()),
            "within_3pct": int((d <= 0.03).sum()), "pairs_ms": pairs}


def _rep_rows(rep: dict, ok) -> list[str]:
    rows = []
    for k, v in rep["protocols"].items():
        rows.append(
            f"| {rep['space']} ({rep['archs']} archs, {rep['trials']} trials) | {k} "
            f"| {100 * v['cv_median']:.2f}% (p90 {100 * v['cv_p90']:.1f}%, max {100 * v['cv_max']:.1f}%) "
            f"| {100 * v['within_10']:.0f}% | {100 * v['within_5']:.0f}% | {v['kendall_tau_mean']:.3f} "
            f"| {1e3 * v['wall_s_per_arch']:.0f} ms | {ok(v['cv_median'] <= 0.02)} |")
    return rows


def render(r: dict) -> str:
    """The results page (numbers from ``r``; the JSON beside it has everything)."""
    reps, ovh, agr = r["repeatability"], r["overhead"], r["agreement"]
    b = ovh["breakdown_s"]
    rest = {k: v for k, v in b.items() if k != "timed_total_s"}
    top = sorted(rest.items(), key=lambda kv: -kv[1])
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    R = r["repeats"]
    new, old = f"R={R}", "R=1"
    cmp_lines = []
    for rep in reps:
        o, n = rep["protocols"][old], rep["protocols"][new]
        cmp_lines.append(
            f"  - {rep['space']}: within +-10% {100 * o['within_10']:.0f}% -> {100 * n['within_10']:.0f}%, "
            f"median CV {100 * o['cv_median']:.1f}% -> {100 * n['cv_median']:.1f}%, worst arch "
            f"{100 * o['cv_max']:.1f}% -> {100 * n['cv_max']:.1f}%, Kendall tau {o['kendall_tau_mean']:.3f} -> "
            f"{n['kendall_tau_mean']:.3f}, measuring time per arch x{n['wall_s_per_arch'] / o['wall_s_per_arch']:.1f}.")
    lines = [
        "# Profiling benchmark (issue 3)",
        "",
        f"CPU execution provider, batch 1, 1 intra-op thread, 10 warm-up + 50 timed runs per session. Default "
        f"protocol since this run: **{R} fresh sessions per arch, spread in time** (a campaign measures chunks of "
        f"{r['chunk']} archs round-robin, so an arch's sessions are one round apart), stored latency = **lowest "
        f"session median** (`profiling/campaign.py` explains why). Date {r['date']}; CPU `{r['cpu_model']}` "
        f"({r['cpus']} vCPUs); ONNX Runtime {r['ort_version']}. Load average at start {r['loadavg_start'][0]:.2f}, "
        f"at end {r['loadavg_end'][0]:.2f}; nothing else heavy was running. No GPU was lent to this session: "
        "CUDA / TensorRT are not measured here (`benchmarks/gpu_check.sh` does that where a GPU exists). "
        f"Produced by `benchmarks/profiling_bench.py` in {r['bench_wall_s'] / 60:.1f} min (raw numbers: "
        "`profiling.json`).",
        "",
        "## Repeatability: old protocol (R=1) vs new default, same archs, interleaved",
        "",
        "Each trial measures every arch once with each protocol, exactly as a campaign would (chunks, rounds, "
        "lowest median), the order of the two protocols alternating between trials so that both see the same "
        "machine phases. 'Within +-10%' is the share of (trial i, trial j) pairs of an arch whose latencies "
        "differ by at most 10%: the chance that re-measuring an arch agrees with the stored number.",
        "",
        "| space | protocol | CV over trials, median over archs (goal <= 2%) | within +-10% | within +-5% "
        "| Kendall tau between trials | measuring time per arch | CV goal |",
        "|---|---|---|---:|---:|---:|---:|---|",
        *[row for rep in reps for row in _rep_rows(rep, ok)],
        "",
        "Old -> new:",
        *cmp_lines,
        "",
        "## Overhead and agreement (new default protocol)",
        "",
        "| measure | goal | result | |",
        "|---|---|---|---|",
        f"| overhead: share of campaign wall time outside timed runs ({ovh['archs']} fbnet archs, R={R}) | <= 25% "
        f"| {100 * ovh['overhead_share']:.1f}% | {ok(ovh['overhead_share'] <= 0.25)} |",
        f"| throughput (fbnet 224) | - | {ovh['archs_per_min']:.1f} archs/min | |",
        f"| agreement with a plain perf_counter loop, lowest of {R} sessions each ({agr['archs']} fbnet archs) "
        f"| within 3% | median {100 * agr['rel_diff_median']:.1f}%, max {100 * agr['rel_diff_max']:.1f}%, "
        f"{agr['within_3pct']}/{agr['archs']} within 3% | {ok(agr['rel_diff_max'] <= 0.03)} |",
        "",
        "Where the non-timed time goes (seconds over the campaign): "
        + ", ".join(f"{k} {v:.2f}" for k, v in top) + f"; timed runs {b['timed_total_s']:.2f}.",
        "",
        "## Reading these numbers",
        "",
        "- **Why the old protocol could not be repeatable here.** On this 2-vCPU VM the whole vCPU runs "
        "1.2-1.8x slower for stretches of time (host contention; `profiling_phases.md`), while the 50 timed "
        "runs of one session are tight. One session per arch therefore stores a sample of a bimodal "
        "distribution, and no in-session statistic (median, trimmed mean) can undo it. Contention only adds "
        f"time, so the lowest of {R} session medians, taken one round apart, estimates the uncontended "
        "latency; it fails only when all sessions of an arch fall into slow phases.",
        "- **What this costs.** Build and export are paid once per arch (the ONNX bytes stay in memory for the "
        f"chunk), but session creation, warm-up and timed runs are paid {R} times, so measuring time per arch "
        "grows by the factor in the table. `--repeats 1` restores the old protocol (and its old device ids).",
        "- **What it bought, and what not.** The gain is real but partial: see 'Old -> new' above. The phases "
        "are not short random blips. In a separate check on the same day, a fixed tiny model measured every "
        "0.4 s over 25 s ran fast (0.22 ms) or slow (0.30-0.39 ms) in stretches from one session up to several "
        "seconds, on both vCPUs at once, with the fast state holding perhaps half the time. Sessions one round "
        "apart (0.4 s for tiny, several seconds for fbnet) are therefore not independent, and all R of them "
        "land in a slow stretch often enough that a re-measurement still disagrees by >10% for a large share "
        "of archs. Larger chunks (120 tiny archs, so 3 s between an arch's sessions) helped only a little in "
        "that check (within +-10% 60% -> 65%). Ranks (Kendall tau) improve more than absolute agreement, "
        "because the lowest median is usually the fast state. fbnet sessions (0.5 s of runs) straddle "
        "phases, so their medians vary on a continuum rather than in two clusters, and the minimum of 3 "
        "removes less of it.",
        "- **What is still not met.** The 2% CV goal is a goal for a quiet, dedicated machine. On this shared "
        "VM each row above reports it as met or not met, with the goal unchanged. The overhead share fell "
        "compared with one session per arch (41.7% in the previous run of this benchmark), because build and "
        "export are now spread over R times the timed runs; but session creation and warm-up are paid R "
        "times, and the throughput row (about a third of the old one-session rate) is the real price.",
        f"- Agreement: campaign and plain loop run back to back per arch, both as the lowest of {R} sessions; "
        f"ours was higher for {sum(a > b for a, b in agr['pairs_ms'])} of {agr['archs']} archs. Both time the "
        "same `session.run` on the same graph with the same session options.",
        "- **Overhead** counts warm-up runs (10 x the median, per session), build (torch module), export (ONNX "
        "graph written directly by `profiling/onnx_graph.py`), session creation (graph optimisation) and the "
        "campaign's fixed planning cost (the stratified sampler scores >= 2000 candidates by FLOPs; a few "
        "seconds per campaign, shrinking in long campaigns). Not done: converting the next arch in a second "
        "process while the current one is timed; on 2 vCPUs it would make the timed runs share the machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat-archs", type=int, default=20, help="fbnet archs in the repeatability comparison")
    ap.add_argument("--tiny-archs", type=int, default=40, help="tiny archs in the repeatability comparison")
    ap.add_argument("--trials", type=int, default=4, help="measurements of every arch per protocol")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--campaign-archs", type=int, default=20)
    ap.add_argument("--agree-archs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", type=Path, default=RESULTS / "profiling.md")
    a = ap.parse_args(argv)
    import onnxruntime as ort

    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        reps = [repeatability(get_space("tiny"), a.tiny_archs, a.trials, a.seed, a.repeats, a.chunk),
                repeatability(get_space("fbnet"), a.repeat_archs, a.trials, a.seed, a.repeats, a.chunk)]
        print(json.dumps(reps, indent=1), flush=True)
        ovh, _ = overhead(a.campaign_archs, a.seed + 1, tmp)
        agr = agreement(get_space("fbnet"), a.agree_archs, a.seed + 2, tmp)
    result = {"date": datetime.date.today().isoformat(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
              "ort_version": ort.__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
              "bench_wall_s": time.time() - t0, "repeats": a.repeats, "chunk": a.chunk,
              "repeatability": reps, "overhead": ovh, "agreement": agr}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    a.out.write_text(render(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("agreement", "repeatability")}, indent=2))
    print(json.dumps(agr, indent=2))
    return result


if __name__ == "__main__":
    main()
