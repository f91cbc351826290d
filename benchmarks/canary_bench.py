"""Is the canary protocol drift-proof?  Re-measurement, across machines, independent agreement, cost.

Run in phases, with state kept in ``--state`` (JSON) between them:

    python benchmarks/canary_bench.py first    # measure 40 tiny + 40 fbnet archs, 3 protocols
    ... at least 30 minutes of other work ...
    python benchmarks/canary_bench.py second   # the same archs again
    python benchmarks/canary_bench.py third    # again, with a CPU-bound process on the other vCPU
    python benchmarks/canary_bench.py fourth   # levers beside paired: more sessions, more runs
    ... other work ...
    python benchmarks/canary_bench.py fifth    # the levers again, compared with fourth
    python benchmarks/canary_bench.py report   # benchmarks/results/canary.md and .json

Protocols, measured interleaved chunk by chunk (the real campaign code, ``measure_chunk``), so
all three see the same moments of the machine:

- ``paired``: the default, one session per arch timed in alternation with the canary, stored
  as ratio x the reference calibrated in phase ``first`` (as a device's first campaign does)
  and reused in every later phase, the ratio decompressed by the state constant that
  calibration learned from its probes (``hwnas.profiling.contention``; 0 when it did not);
- ``paired_ratio``: the same rows as plain ratio x reference (the default before the state
  constant), so the constant's effect is measured on the very same sessions;
- ``default3``: the previous default, 3 plain sessions a round of 16 archs apart, lowest median;
- ``plain``: one plain session.

Phase ``first`` also re-times 40 archs of each *shipped* CSV with all protocols (across
machines: the shipped data came from another host), and times 10 archs of each space with a
plain ``perf_counter`` loop over the same ONNX files, round-robin (independent agreement).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from hwnas.profiling.campaign import CampaignConfig, measure_chunk, open_timer, prepare_arch
from hwnas.profiling.canary import build_canary, calibrate
from hwnas.profiling.contention import calibrated_ms
from hwnas.profiling.fingerprint import describe_side_by_side, device_fingerprint, device_name
from hwnas.profiling.stats import RATIO_ESTIMATORS
from hwnas.profiling.transfer import read_csv_fingerprints

SHIPPED = {"tiny": "data/latency/tiny_cpu.csv", "fbnet": "data/latency/fbnet224_cpu.csv"}
PROTOCOLS = ("paired", "default3", "plain")
# levers tried beside the default (phases fourth and fifth): 2 or 3 paired sessions a round of
# CHUNK archs apart (the median-ratio session is stored), or one session of 200 runs instead of 50;
# each decompressed by the state constant like ``paired`` (the rules of DERIVED use raw ratios)
EXTRA_PROTOCOLS = ("paired2", "paired3", "paired_r200")
# estimates derived from paired3's three session ratios (the same runs; see _derived)
DERIVED = ("paired3_mean", "paired2of3_mean", "paired_adaptive")
ADAPTIVE_TOL = 0.03  # paired_adaptive: a third session only when the first two ratios differ by more
CHUNK = 16


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(r for r in f if not r.startswith("#")))
    return {r["arch"]: float(r["latency_ms"]) for r in rows}


def _cfg(space: str, protocol: str) -> CampaignConfig:
    if protocol.startswith("paired"):
        repeats = {"paired2": 2, "paired3": 3}.get(protocol, 1)
        return CampaignConfig(space=space, num_archs=0, repeats=repeats, chunk=CHUNK,
                              runs=200 if protocol == "paired_r200" else 50)
    return CampaignConfig(space=space, num_archs=0, canary=False, repeats=3 if protocol == "default3" else 1,
                          chunk=CHUNK)


def _measure(state: dict, protocols=PROTOCOLS) -> dict:
    """Every arch of every space with every protocol, interleaved chunk by chunk."""
    out = {sp: {p: {} for p in protocols} for sp in state["archs"]}
    cost = {sp: {p: {"wall_s": 0.0, "arch_timed_s": 0.0, "canary_timed_s": 0.0, "archs": 0} for p in protocols}
            for sp in state["archs"]}
    estimators = {sp: {e: {} for e in RATIO_ESTIMATORS} for sp in state["archs"]}
    session_ratios = {sp: {p: {} for p in protocols if p in ("paired2", "paired3")} for sp in state["archs"]}
    timers = {}
    for sp in state["archs"]:
        c = state["canary"][sp]
        canary = build_canary(sp, arch=c["arch"])
        assert canary.sha256 == c["sha256"], "the canary graph changed between phases"
        timers[sp] = (open_timer(canary, _cfg(sp, "paired")), c["reference_ms"], c.get("gamma", 0.0))
        if "paired" in protocols:
            out[sp]["paired_ratio"] = {}
    n = max(len(a) for a in state["archs"].values())
    for i in range(0, n, CHUNK):
        for sp, archs in state["archs"].items():
            for p in protocols:
                cfg = _cfg(sp, p)
                timer, ref, gamma = timers[sp] if p.startswith("paired") else (None, None, 0.0)

                def record(row, sp=sp, p=p, ref=ref, gamma=gamma):
                    assert row["status"] == "ok", row.get("error")
                    if ref is None:
                        lat = row["median_ms"]
                    else:
                        lat = calibrated_ms(row["ratio"], row["canary_median_ms"], ref, gamma if p.startswith("paired") else 0.0)
                    out[sp][p][row["arch"]] = lat
                    if p == "paired":
                        out[sp]["paired_ratio"][row["arch"]] = row["ratio"] * ref
                    cost[sp][p]["arch_timed_s"] += row["timed_total_ms"] / 1e3
                    cost[sp][p]["archs"] += 1
                    if ref is not None:
                        cost[sp][p]["canary_timed_s"] += row["extra"]["canary_timed_ms"] / 1e3
                    if p in session_ratios[sp]:
                        session_ratios[sp][p][row["arch"]] = row["extra"]["session_ratios"]
                    if p == "paired":  # the estimators of the default protocol
                        for e, v in row["extra"]["estimates"].items():
                            estimators[sp][e][row["arch"]] = v * ref

                t0 = time.perf_counter()
                measure_chunk(sp, archs[i:i + CHUNK], cfg, record, timer=timer)
                cost[sp][p]["wall_s"] += time.perf_counter() - t0
    third_share = {}
    for sp in state["archs"]:
        if "paired3" in session_ratios[sp]:
            derived, third_share[sp] = _derived(session_ratios[sp]["paired3"], timers[sp][1])  # gamma 0
            out[sp].update(derived)
    return {"latency": out, "estimators": estimators, "cost": cost, "session_ratios": session_ratios,
            "adaptive_third_share": third_share}


def _derived(ratios: dict, ref: float) -> dict:
    """Latencies other rules would have stored from paired3's sessions (time order):
    the mean of all three ratios, the mean of the first two, and the adaptive rule (the mean
    of the first two when they agree within ADAPTIVE_TOL, else the median of three).
    -> (protocol -> arch -> latency, the adaptive rule's share of archs that needed a third session)."""
    out = {k: {} for k in DERIVED}
    third = 0
    for arch, r in ratios.items():
        out["paired3_mean"][arch] = float(np.mean(r)) * ref
        out["paired2of3_mean"][arch] = float(np.mean(r[:2])) * ref
        agree = abs(r[0] / r[1] - 1) <= ADAPTIVE_TOL
        third += not agree
        out["paired_adaptive"][arch] = (float(np.mean(r[:2])) if agree else float(np.median(r))) * ref
    return out, third / max(len(ratios), 1)


def _agreement(a: dict, b: dict) -> dict:
    keys = sorted(set(a) & set(b))
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    rel = np.abs(y - x) / x
    scale = float(np.median(y / x))
    rel_s = np.abs(y / scale - x) / x
    return {"archs": len(keys), "within_10": float(np.mean(rel <= 0.10)), "within_5": float(np.mean(rel <= 0.05)),
            "kendall_tau": float(kendalltau(x, y)[0]), "median_ratio": scale,
            "within_10_scaled": float(np.mean(rel_s <= 0.10)), "within_5_scaled": float(np.mean(rel_s <= 0.05))}


def _perf_counter_loop(space: str, archs: list[str], rounds: int = 200) -> dict:
    """Median time of each ONNX file in a bare ``perf_counter`` loop, files round-robin."""
    import onnxruntime as ort

    from hwnas.profiling.providers import session_options

    sessions = {}
    for a in archs:
        _, data = prepare_arch(space, a, _cfg(space, "plain"))
        s = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape])
        sessions[a] = (s, {inp.name: x.astype(np.float32)})
    for s, feed in sessions.values():
        for _ in range(10):
            s.run(None, feed)
    times = {a: [] for a in archs}
    for _ in range(rounds):
        for a, (s, feed) in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[a].append(time.perf_counter() - t0)
    return {a: float(np.median(t) * 1e3) for a, t in times.items()}


def _relative(d: dict, keys) -> np.ndarray:
    v = np.array([d[k] for k in keys])
    return v / np.exp(np.mean(np.log(v)))


def phase_first(state: dict, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    here = device_fingerprint("cpu", threads=1)
    state.update(archs={}, canary={}, shipped={}, fingerprint=here, phases={})
    for sp, path in SHIPPED.items():
        stored = _read_csv(path)
        state["archs"][sp] = [str(x) for x in rng.choice(sorted(stored), size=n, replace=False)]
        state["shipped"][sp] = {"path": path, "values": {a: stored[a] for a in state["archs"][sp]},
                                "fingerprints": read_csv_fingerprints(path), "device_id": _csv_device(path)}
        canary = build_canary(sp)
        ref = calibrate(canary, probes=True)  # as a device's first campaign calibrates
        state["canary"][sp] = {"arch": canary.arch, "sha256": canary.sha256, "reference_ms": ref.reference_ms,
                               "gamma": ref.gamma, "calibration": ref.to_dict()}
    _run_phase(state, "first")
    indep = {}
    for sp in state["archs"]:
        sub = state["archs"][sp][:10]
        indep[sp] = {"archs": sub, "perf_counter_ms": _perf_counter_loop(sp, sub)}
    state["independent"] = indep


def _csv_device(path):
    with open(path, newline="") as f:
        row = next(csv.DictReader(r for r in f if not r.startswith("#")))
    return {"device_id": row.get("device_id"), "device_name": row.get("device_name"), "created": row.get("created")}


def _run_phase(state: dict, name: str, busy: bool = False, protocols=PROTOCOLS, against: str = "first") -> None:
    load0, t0 = os.getloadavg(), time.time()
    hog = None
    if busy:  # a CPU-bound process on the other vCPU for the whole phase
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        res = _measure(state, protocols)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    res.update(started=datetime.datetime.fromtimestamp(t0).isoformat(timespec="seconds"), t0=t0, loadavg_start=load0,
               loadavg_end=os.getloadavg(), wall_s=time.time() - t0, busy=busy, against=against,
               protocols=list(protocols))
    state["phases"][name] = res


def report(state: dict, out: Path) -> dict:
    ph = state["phases"]
    first = ph["first"]
    rep = {"date": first["started"][:10], "fingerprint": state["fingerprint"], "canary": state["canary"],
           "phases": {k: {kk: v.get(kk) for kk in ("started", "wall_s", "loadavg_start", "loadavg_end", "busy",
                                                    "protocols", "note")} for k, v in ph.items()}, "remeasure": {}, "estimators": {}, "across": {}, "cost": {},
           "independent": {}}
    for later in [k for k in ph if k != "first"]:
        base = ph[ph[later].get("against", "first")]
        gap_min = (ph[later]["t0"] - base["t0"]) / 60
        key = f"{later} vs {ph[later].get('against', 'first')}"
        for sp in state["archs"]:
            for p in [p for p in ph[later]["latency"][sp] if p in base["latency"][sp]]:
                rep["remeasure"].setdefault(key, {}).setdefault(sp, {})[p] = {
                    **_agreement(base["latency"][sp][p], ph[later]["latency"][sp][p]), "gap_min": gap_min}
            for e in RATIO_ESTIMATORS:
                if base["estimators"][sp][e] and ph[later]["estimators"][sp][e]:
                    rep["estimators"].setdefault(key, {}).setdefault(sp, {})[e] = _agreement(
                        base["estimators"][sp][e], ph[later]["estimators"][sp][e])
    for sp in state["archs"]:
        shipped = state["shipped"][sp]["values"]
        rep["across"][sp] = {p: _agreement(shipped, first["latency"][sp][p]) for p in PROTOCOLS}
        rep["across"][sp]["shipped_device"] = state["shipped"][sp]["device_id"]
        fps = state["shipped"][sp]["fingerprints"]
        dev = state["shipped"][sp]["device_id"]
        theirs = next(iter(fps.values())) if fps else {  # an older CSV: only its rows' device columns
            "cpu_model": (dev["device_name"] or "?").split(" / ")[0], "device_id": dev["device_id"]}
        rep["across"][sp]["side_by_side"] = describe_side_by_side(theirs, state["fingerprint"],
                                                                  labels=("shipped", "here"))
        c = first["cost"][sp]
        rep["cost"][sp] = {p: {"archs_per_min": 60 * c[p]["archs"] / c[p]["wall_s"],
                               "outside_arch_runs": 1 - c[p]["arch_timed_s"] / c[p]["wall_s"],
                               "outside_all_timed_runs": 1 - (c[p]["arch_timed_s"] + c[p]["canary_timed_s"])
                               / c[p]["wall_s"]} for p in PROTOCOLS}
        ind = state["independent"][sp]
        keys = ind["archs"]
        ref = _relative(ind["perf_counter_ms"], keys)
        rep["independent"][sp] = {}
        for p in PROTOCOLS:
            rel = _relative(first["latency"][sp][p], keys)
            dev = np.abs(rel / ref - 1)
            rep["independent"][sp][p] = {"within_5": float(np.mean(dev <= 0.05)), "max_dev": float(dev.max()),
                                         "archs": len(keys)}
    if "fourth" in ph:  # what the levers cost, measured side by side in that phase
        rep["cost_lever"] = {sp: {p: 60 * c["archs"] / c["wall_s"] for p, c in ph["fourth"]["cost"][sp].items()}
                             for sp in state["archs"]}
        for sp, share in (ph["fourth"].get("adaptive_third_share") or {}).items():
            c = ph["fourth"]["cost"][sp]  # paired2's cost plus a third session for `share` of the archs
            per_arch = c["paired2"]["wall_s"] / c["paired2"]["archs"] + share * (
                c["paired3"]["wall_s"] / c["paired3"]["archs"] - c["paired2"]["wall_s"] / c["paired2"]["archs"])
            rep["cost_lever"][sp]["paired_adaptive (estimated)"] = 60 / per_arch
        rep["adaptive_third_share"] = {k: v.get("adaptive_third_share") for k, v in ph.items()
                                       if v.get("adaptive_third_share")}
    out.with_suffix(".json").write_text(json.dumps(rep, indent=1, default=str))
    out.write_text(_markdown(rep, state))
    print(out.read_text())
    return rep


def _pct(x):
    return f"{100 * x:.0f}%"


def _markdown(rep: dict, state: dict) -> str:
    fp = rep["fingerprint"]
    L = ["# The canary protocol: re-measurement, across machines, agreement, cost", "",
         f"Measured {rep['date']} by `benchmarks/canary_bench.py` on `{fp.get('cpu_model')}` "
         f"(device id `{fp.get('device_id')}`, {fp.get('cpu_visible_cores')} visible cores), CPU EP, 1 thread, "
         f"batch 1, 10 warm-up + 50 timed runs per session; {len(state['archs']['tiny'])} archs of tiny (32x32) "
         f"and of fbnet (224x224), drawn from the shipped CSVs. Protocols interleaved chunk by chunk: `paired` (the "
         "default: one session, runs alternated with the canary's, ratio x the reference calibrated once in phase "
         "first, the ratio decompressed by the state constant that calibration learned: "
         + ", ".join(f"{sp} {c.get('gamma', 0.0):.2f}" + (f" ({c['calibration']['state']['why']})"
                                                          if (c.get('calibration') or {}).get('state') else "")
                     for sp, c in state["canary"].items())
         + "), `paired_ratio` (the same rows as plain ratio x reference: the default before the constant), `default3` (the previous default: 3 plain sessions a round of 16 archs apart, lowest median), "
         "`plain` (one session). Levers (phases fourth and fifth): `paired2` / `paired3` (2 / 3 paired sessions a "
         "round apart, the median-ratio session stored), `paired_r200` (one session of 200 runs), all three "
         "decompressed by the state constant like `paired`, and rules applied to paired3's three raw session ratios: `paired3_mean`, `paired2of3_mean` (mean of the first two), "
         f"`paired_adaptive` (mean of the first two when they agree within {100 * ADAPTIVE_TOL:.0f}%, else the "
         "median of three).", f"Host: `{device_name(fp)}`.", "", "Phases:", ""]
    for k, v in rep["phases"].items():
        L.append(f"- `{k}`: started {v['started']}, {v['wall_s']:.0f} s, load average {v['loadavg_start'][0]:.2f} "
                 f"-> {v['loadavg_end'][0]:.2f}{', with a CPU-bound process on the other vCPU' if v['busy'] else ''}"
                 f", protocols {', '.join(v['protocols'] or PROTOCOLS)}" + (f"; **{v['note']}**" if v.get("note") else ""))
    L += ["", "## Re-measurement (goal for `paired`: >= 99% within +-10%, >= 95% within +-5%, tau >= 0.95)", "",
          "| phases | gap | space | protocol | within +-10% | within +-5% | Kendall tau | median later/first |",
          "|---|---:|---|---|---:|---:|---:|---:|"]
    for later, d in rep["remeasure"].items():
        for sp, pp in d.items():
            for p, r in pp.items():
                L.append(f"| {later} | {r['gap_min']:.0f} min | {sp} | {p} | {_pct(r['within_10'])} | "
                         f"{_pct(r['within_5'])} | {r['kendall_tau']:.3f} | {r['median_ratio']:.3f} |")
    L += ["", "Ratio estimators of the paired protocol (same runs, the estimate each would have stored):", "",
          "| phases | space | estimator | within +-10% | within +-5% | Kendall tau |", "|---|---|---|---:|---:|---:|"]
    for later, d in rep["estimators"].items():
        for sp, ee in d.items():
            for e, r in ee.items():
                L.append(f"| {later} | {sp} | {e} | {_pct(r['within_10'])} | {_pct(r['within_5'])} | "
                         f"{r['kendall_tau']:.3f} |")
    L += ["", "## Across machines (no goal: another machine is another device)", "",
          "The shipped CSVs re-timed here, phase first. `scaled`: after the one scale factor (median ratio) "
          "that fits best.", "",
          "| space | protocol | now/shipped | within +-10% raw / scaled | within +-5% scaled | Kendall tau |",
          "|---|---|---:|---:|---:|---:|"]
    for sp, d in rep["across"].items():
        for p in PROTOCOLS:
            r = d[p]
            L.append(f"| {sp} | {p} | {r['median_ratio']:.3f} | {_pct(r['within_10'])} / "
                     f"{_pct(r['within_10_scaled'])} | {_pct(r['within_5_scaled'])} | {r['kendall_tau']:.3f} |")
    for sp, d in rep["across"].items():
        L += ["", f"Fingerprints, {sp} (shipped device `{d['shipped_device']['device_id']}`, "
                  f"\"{d['shipped_device']['device_name']}\", measured {d['shipped_device']['created']}):", "",
              "```", d["side_by_side"], "```"]
    L += ["", "## Independent agreement (goal: relative latencies within 5%)", "",
          "10 archs per space timed by a bare `perf_counter` loop over the same ONNX files, round-robin, 200 rounds; "
          "each latency divided by its set's geometric mean, then compared.", "",
          "| space | protocol | within 5% | max deviation |", "|---|---|---:|---:|"]
    for sp, d in rep["independent"].items():
        for p, r in d.items():
            L.append(f"| {sp} | {p} | {r['within_5'] * r['archs']:.0f}/{r['archs']} | {100 * r['max_dev']:.1f}% |")
    L += ["", "## Cost (goal: `paired` no slower per arch than `default3`), phase first", "",
          "| space | protocol | archs/min | wall share outside the arch's timed runs | outside all timed runs |",
          "|---|---|---:|---:|---:|"]
    for sp, d in rep["cost"].items():
        for p, r in d.items():
            L.append(f"| {sp} | {p} | {r['archs_per_min']:.1f} | {_pct(r['outside_arch_runs'])} | "
                     f"{_pct(r['outside_all_timed_runs'])} |")
    if "cost_lever" in rep:
        L += ["", "The levers, phase fourth (archs/min): " + "; ".join(
            f"{sp} " + ", ".join(f"{p} {v:.1f}" for p, v in d.items()) for sp, d in rep["cost_lever"].items())]
    for k, d in (rep.get("adaptive_third_share") or {}).items():
        L.append(f"- phase {k}: `paired_adaptive` needed a third session for "
                 + ", ".join(f"{100 * v:.0f}% of {sp}'s archs" for sp, v in d.items())
                 + f" (first two ratios more than {100 * ADAPTIVE_TOL:.0f}% apart)")
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=["first", "second", "third", "fourth", "fifth", "report"])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state", type=Path, default=Path("benchmarks/results/canary_state.json"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/canary.md"))
    a = ap.parse_args(argv)
    state = json.loads(a.state.read_text()) if a.state.exists() and a.phase != "first" else {}
    if a.phase == "first":
        phase_first(state, a.n, a.seed)
    elif a.phase == "report":
        return report(state, a.out)
    elif a.phase in ("fourth", "fifth"):  # the repeats lever: paired2 beside paired, fifth re-measures fourth
        _run_phase(state, a.phase, protocols=("paired", *EXTRA_PROTOCOLS),
                   against="first" if a.phase == "fourth" else "fourth")
    else:
        _run_phase(state, a.phase, busy=a.phase == "third")
    a.state.write_text(json.dumps(state, default=str))
    print(f"phase {a.phase} done; state in {a.state}")


if __name__ == "__main__":
    main()
