"""Profiling benchmark (issue 3): repeatability, overhead and agreement of the runner.

On the ``fbnet`` space at 224x224, batch 1, CPU EP, 1 intra-op thread, default protocol
(10 warm-up + 50 timed runs):

1. repeatability: ``--repeat-archs`` archs each measured in ``--sessions`` fresh
   sessions; coefficient of variation of the medians (goal: median CV <= 2%);
2. overhead: a real campaign of ``--campaign-archs`` archs into a fresh store; share of
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

from hwnas.profiling.campaign import CampaignConfig, run_campaign
from hwnas.profiling.fingerprint import cpu_model
from hwnas.profiling.onnx_graph import arch_to_onnx
from hwnas.profiling.providers import session_options
from hwnas.profiling.runner import measure
from hwnas.profiling.sampling import sample_archs
from hwnas.profiling.store import LatencyStore
from hwnas.space import get_space

RESULTS = Path(__file__).resolve().parent / "results"


def repeatability(space, n_archs: int, sessions: int, seed: int) -> dict:
    cvs, cpu_cvs, medians = [], [], []
    for a in sample_archs(space, n_archs, sampler="stratified", seed=seed):
        model = arch_to_onnx(space, a).SerializeToString()
        ms = [measure(model) for _ in range(sessions)]
        meds = np.array([m.median_ms for m in ms])
        cpu = np.array([m.cpu_median_ms for m in ms])
        medians.append(float(np.median(meds)))
        cvs.append(float(meds.std(ddof=1) / meds.mean()))
        cpu_cvs.append(float(cpu.std(ddof=1) / cpu.mean()))
    cvs, cpu_cvs = np.array(cvs), np.array(cpu_cvs)
    return {"archs": n_archs, "sessions": sessions, "cv_median": float(np.median(cvs)),
            "cv_p90": float(np.percentile(cvs, 90)), "cv_max": float(cvs.max()),
            "cpu_time_cv_median": float(np.median(cpu_cvs)), "cpu_time_cv_max": float(cpu_cvs.max()),
            "latency_range_ms": [min(medians), max(medians)]}


def overhead(n_archs: int, seed: int, tmp: Path) -> tuple[dict, list[dict]]:
    with LatencyStore(tmp / "bench.db") as store:
        res = run_campaign(store, CampaignConfig(space="fbnet", num_archs=n_archs, seed=seed))
        rows = store.rows("fbnet", status="ok")
    parts = {k.replace("_ms", "_s"): float(np.sum([r[k] or 0.0 for r in rows])) / 1e3 for k in
             ("build_ms", "export_ms", "session_ms", "first_run_ms", "timed_total_ms")}
    parts["warmup_runs_s"] = float(np.sum([(r["warmup"] - 1) * r["median_ms"] for r in rows])) / 1e3
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
    """Each arch: a one-arch campaign into a store (the stored median), then at once the
    plain loop on the same graph written to disk.  Back to back, so that a change of the
    machine's load between the two is as unlikely as it can be on a shared machine."""
    diffs, pairs = [], []
    with LatencyStore(tmp / "agree.db") as store:
        for i in range(n):
            run_campaign(store, CampaignConfig(space="fbnet", num_archs=1, sampler="uniform", seed=seed + i))
            r = store.rows("fbnet", status="ok")[-1]
            path = tmp / "m.onnx"
            path.write_bytes(arch_to_onnx(space, r["arch"]).SerializeToString())
            ref = plain_loop(str(path))
            diffs.append(abs(r["median_ms"] - ref) / ref)
            pairs.append((r["median_ms"], ref))
    d = np.array(diffs)
    return {"archs": len(d), "rel_diff_median": float(np.median(d)), "rel_diff_max": float(d.max()),
            "within_3pct": int((d <= 0.03).sum()), "pairs_ms": pairs}


def render(r: dict) -> str:
    """The results page (numbers from ``r``; the JSON beside it has everything)."""
    rep, ovh, agr = r["repeatability"], r["overhead"], r["agreement"]
    b = ovh["breakdown_s"]
    rest = {k: v for k, v in b.items() if k != "timed_total_s"}
    top = sorted(rest.items(), key=lambda kv: -kv[1])
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    lines = [
        "# Profiling benchmark (issue 3)",
        "",
        f"fbnet space at 224x224, batch 1, CPU execution provider, 1 intra-op thread, 10 warm-up + 50 timed "
        f"runs per session. Date {r['date']}; CPU `{r['cpu_model']}` ({r['cpus']} vCPUs); ONNX Runtime "
        f"{r['ort_version']}. Load average at start {r['loadavg_start'][0]:.1f}, at end {r['loadavg_end'][0]:.1f} "
        f"(other jobs shared this 2-vCPU machine). No GPU was lent to this session: CUDA / TensorRT are not "
        "measured here; `benchmarks/gpu_check.sh` does that where a GPU exists. Produced by "
        "`benchmarks/profiling_bench.py` (raw numbers: `profiling.json`).",
        "",
        "| measure | goal | result | |",
        "|---|---|---|---|",
        f"| repeatability: CV of the median over {rep['sessions']} fresh sessions, median over {rep['archs']} archs "
        f"| <= 2% | {100 * rep['cv_median']:.2f}% (p90 {100 * rep['cv_p90']:.1f}%, max {100 * rep['cv_max']:.1f}%) "
        f"| {ok(rep['cv_median'] <= 0.02)} |",
        f"| same, thread CPU time instead of wall clock (diagnostic: noise without preemption) | - "
        f"| {100 * rep['cpu_time_cv_median']:.2f}% (max {100 * rep['cpu_time_cv_max']:.1f}%) | |",
        f"| overhead: share of campaign wall time outside timed runs ({ovh['archs']} archs) | <= 25% "
        f"| {100 * ovh['overhead_share']:.1f}% | {ok(ovh['overhead_share'] <= 0.25)} |",
        f"| throughput | - | {ovh['archs_per_min']:.1f} archs/min | |",
        f"| agreement with a plain perf_counter loop ({agr['archs']} archs) | within 3% "
        f"| median {100 * agr['rel_diff_median']:.1f}%, max {100 * agr['rel_diff_max']:.1f}%, "
        f"{agr['within_3pct']}/{agr['archs']} within 3% | {ok(agr['rel_diff_max'] <= 0.03)} |",
        "",
        "Where the non-timed time goes (seconds over the campaign): "
        + ", ".join(f"{k} {v:.2f}" for k, v in top) + f"; timed runs {b['timed_total_s']:.2f}.",
        "",
        "## Reading these numbers",
        "",
        "- **The machine was oversubscribed.** The load average stayed above 2 on 2 vCPUs for the whole run, "
        "because other helpers' test suites were running too. A 1-thread inference that loses its CPU for a "
        "time slice gets slower by whole milliseconds, and how often that happens changes from second to "
        "second. The thread-CPU-time row separates the two effects. Between sessions, the CPU time the "
        f"computing thread used varies {100 * rep['cpu_time_cv_median']:.1f}% (median) and the wall clock "
        f"{100 * rep['cv_median']:.1f}%. The gap between them is time spent waiting for a CPU. The CPU-time "
        "variation itself shows that the work also slowed down, through shared caches and a busy SMT sibling. "
        "This machine cannot show a 2% noise floor. The goals are reported as not met; they have not been "
        "measured on a quiet machine.",
        f"- Agreement: our campaign and the plain loop run **back to back** for each arch, so that both see "
        f"nearly the same load. Ours was higher for {sum(a > b for a, b in agr['pairs_ms'])} of "
        f"{agr['archs']} archs. Mixed signs like these fit load drift better than a systematic bias, but "
        "with this much noise a bias of a few percent cannot be ruled out. Both time the same "
        "`session.run` on the same graph with the same session options.",
        "- A long campaign amortises the fixed planning cost. The shipped 1000-arch "
        "`data/latency/fbnet224_cpu.csv` campaign, on the same machine and settings, ran at 39.9 archs/min "
        "with about 43% of its active wall time outside the timed runs. ONNX export took 17%, warm-up runs "
        "10%, torch build 7%, and session creation plus first run 5% (`data/latency/README.md`).",
        "- **Overhead**: the warm-up runs (10 x the median) are part of the protocol and count as overhead. "
        "So do build (torch module) and export (ONNX graph written directly by `profiling/onnx_graph.py`; "
        "`torch.onnx.export` costs several times more), session creation (graph optimisation) and the "
        "campaign's fixed planning cost (the stratified sampler scores a pool of >= 2000 candidates by "
        "FLOPs). The planning cost is a few seconds per campaign, so its share shrinks in long campaigns. "
        "What was done: models go to ORT as in-memory bytes (no files), they are serialized once, one "
        "session per arch, and the direct graph writer replaced the torch exporter. What was not done: "
        "converting the next arch in a second process while the current one is timed. That would hide "
        "build + export on a machine with a spare core, but here both vCPUs were already busy, and it "
        "would make the timed runs share the memory system.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat-archs", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--campaign-archs", type=int, default=20)
    ap.add_argument("--agree-archs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", type=Path, default=RESULTS / "profiling.md")
    a = ap.parse_args(argv)
    import onnxruntime as ort

    space = get_space("fbnet")
    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rep = repeatability(space, a.repeat_archs, a.sessions, a.seed)
        ovh, _ = overhead(a.campaign_archs, a.seed + 1, tmp)
        agr = agreement(space, a.agree_archs, a.seed + 2, tmp)
    result = {"date": datetime.date.today().isoformat(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
              "ort_version": ort.__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
              "bench_wall_s": time.time() - t0, "repeatability": rep, "overhead": ovh, "agreement": agr}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    a.out.write_text(render(result))
    print(json.dumps({k: v for k, v in result.items() if k != "agreement"}, indent=2))
    print(json.dumps(agr, indent=2))
    return result


if __name__ == "__main__":
    main()
