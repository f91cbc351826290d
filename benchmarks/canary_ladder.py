"""Levers against issue 10's remaining gap: the host's contended state moves small archs.

Why: on the 2-vCPU EPYC VM the host alternates between a quiet and a contended state, the
latter visible as CPU steal in ``/proc/stat`` (``hwnas.profiling.steal``).  In the contended
state the canary runs about 1.2-1.3x slower, and the archs do not all slow by the same
factor: from the quietest phase to the most contended, tiny's five smallest archs
(skip-heavy, 55-75 us) slowed 1.71x and its five largest 0.92x while the canary slowed
1.31x (the report's "Raw slowdown" line).  One canary cancels the common factor but not
that spread, so a re-measurement in the other state moves small archs by up to ~30%
against the canary.  Two ways to model
the spread, each measured here on the same sessions:

- **A ladder of canaries** (``ladder``, ``blocks``): canaries of three sizes, S, M, L, timed
  in the same session as the arch.  With ``log r_i = s * (log A_ref - log ref_i)`` for canary
  ``i`` (``r_i`` the arch's median ratio to it, ``ref_i`` its reference, ``s`` the state's
  compression), a line through the three points gives the arch on the reference scale,
  ``log A_ref = -a / b``: the two-point calibration of instruments, in log space.
  ``ladder`` pairs each arch run with S, M, L in turn; ``blocks`` with 17 pairs of each in
  three contiguous blocks, after ``BLOCK_WARMUP`` untimed pairs at each switch.  Both cost
  what the default costs (the three canaries' mean latency is about M's).
- **A state constant** (``state_gamma``): ratios compress toward 1 as the canary slows,
  ``log r_obs = log r_ref * (1 - gamma * log f)``, ``f`` the canary's median over its
  reference in the same session (the protocol stores both today).  ``gamma`` is a property of
  the host, learned from a few *probe* archs measured repeatedly (``N_PROBES`` at each end of
  the FLOPs range); for each pair of phases compared it is fitted on the probes' sessions of
  the *other* phases only, and the probes are left out of every comparison.
  ``state_gamma_calib`` instead fixes one ``gamma`` per space from calibration-like blocks
  (``calib``: 8 rounds 2 s apart, probes S and L paired with M), as a device's first
  campaign could learn it.

Phases, each about a minute, run on an otherwise idle machine at different times:

    python benchmarks/canary_ladder.py phase     # first call calibrates S, M, L interleaved
    ... minutes to hours later, as many times as you like ...
    python benchmarks/canary_ladder.py phase
    python benchmarks/canary_ladder.py trace     # the canary alone for 100 s: the host's states
    python benchmarks/canary_ladder.py calib     # can a 15 s calibration block learn gamma?
    python benchmarks/canary_ladder.py report    # benchmarks/results/canary_ladder.md / .json

Per arch and phase one session of each variant, in rotating order: ``default`` (the protocol
today, 50 pairs with M), ``blocks`` and (phases 0-3) ``ladder``.  Raw per-pair times are kept
in the state file (``benchmarks/work/``), so every estimator is computed from the same runs;
the raw state of the 2026-12-03 run is ``benchmarks/results/canary_ladder_state.json.gz``
(``gunzip -c`` it to ``--state`` to recompute the report).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from hwnas.cost import arch_cost
from hwnas.profiling.campaign import CampaignConfig, prepare_arch
from hwnas.profiling.canary import CALIBRATION_QUANTILE, build_canary, default_canary_arch, probe_archs
from hwnas.profiling.contention import decompress, fit_gamma
from hwnas.profiling.fingerprint import device_fingerprint, device_name
from hwnas.profiling.runner import first_run, measure, open_model
from hwnas.profiling.steal import StealMeter, read_steal_ticks
from hwnas.space import get_space

STATE = Path("benchmarks/work/canary_ladder_state.json")
ARCHS = Path("benchmarks/results/canary_state_m17.json")  # the 40 + 40 archs of canary_bench
N_ARCHS = {"tiny": 40, "fbnet": 20}
PAIRS = 50
BLOCK_WARMUP = 3
CAL_ROUNDS, CAL_RUNS, CAL_GAP_S = 8, 30, 2.0
# "ladder" (partners rotating pair by pair) was measured in phases 0-3 only: it breaks the
# cache residency of a plain pair (the M canary ran 1.16x slower beside S and L), so later
# phases run only the other two
VARIANTS = {"default": (["M"], False), "blocks": (["S", "M", "L"], True)}
ESTIMATORS = ("default", "state_gamma", "state_gamma_calib") + tuple(f"{v}_{e}" for v in ("ladder", "blocks") for e in ("M", "fit", "bracket"))
N_PROBES = 2  # per end: the archs of lowest and highest FLOPs among the benchmark's, for state_gamma


def ladder_archs(space_name: str) -> dict:
    """S, M, L: the probes (3% and 97% FLOPs of the canary rule's seeded sample) and the canary."""
    space = get_space(space_name)
    probes = probe_archs(space)
    return {"S": probes["S"], "M": default_canary_arch(space), "L": probes["L"]}


def _timed(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _session(opened_canaries: dict, partners: list[str], data: bytes, warmup: int = 10, blocks: bool = False) -> dict:
    """One fresh session of the arch, each timed run paired with a canary, the order
    flipping every pair as in ``PairedTimer``: with one partner the protocol of today; with
    three, either rotating S, M, L pair by pair or (``blocks``) in three contiguous blocks,
    each after ``BLOCK_WARMUP`` untimed pairs, so that the arch and its partner keep the
    caches they would have in a plain paired session."""
    m = open_model(data, ep="cpu", threads=1)
    first_run(m)
    run = m.runner.run
    for i in range(warmup - 1):
        run()
        opened_canaries[partners[i % len(partners)]].runner.run()
    n = PAIRS + (-PAIRS) % len(partners)  # 50 with one partner, 51 (17 each) with three
    a, c, who = [], [], []
    for i in range(n):
        k = partners[i * len(partners) // n] if blocks else partners[i % len(partners)]
        cr = opened_canaries[k].runner.run
        if blocks and i and k != who[-1]:
            for _ in range(BLOCK_WARMUP):
                run()
                cr()
        if i % 2:
            c.append(_timed(cr))
        a.append(_timed(run))
        if not i % 2:
            c.append(_timed(cr))
        who.append(k)
    return {"partners": who, "arch_s": a, "canary_s": c}


def _calibrate(canaries: dict) -> dict:
    """The three references, measured in interleaved rounds so that all three see the same
    states; each is the lower quartile of its session medians (``canary.calibrate``'s rule)."""
    med = {k: [] for k in canaries}
    for r in range(CAL_ROUNDS):
        if r:
            time.sleep(CAL_GAP_S)
        for k, can in canaries.items():
            med[k].append(measure(can.onnx, runs=CAL_RUNS).median_ms)
    return {k: {"reference_ms": float(np.quantile(v, CALIBRATION_QUANTILE)), "session_medians_ms": v}
            for k, v in med.items()}


def phase(state: dict) -> None:
    archs = json.loads(ARCHS.read_text())["archs"]
    t0, steal, load0 = time.time(), StealMeter(), os.getloadavg()
    ph = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "loadavg_start": load0, "spaces": {}}
    for sp, n in N_ARCHS.items():
        names = state.setdefault("ladder", {}).setdefault(sp, ladder_archs(sp))
        canaries = {k: build_canary(sp, arch=a) for k, a in names.items()}
        if sp not in state.setdefault("references", {}):
            state["references"][sp] = _calibrate(canaries)
        opened = {}
        for k, can in canaries.items():
            opened[k] = open_model(can.onnx, ep="cpu", threads=1)
            first_run(opened[k])
        cfg = CampaignConfig(space=sp, num_archs=0)
        out = {}
        for i, arch in enumerate(archs[sp][:n]):
            data = prepare_arch(sp, arch, cfg)[1]
            order = list(VARIANTS)
            order = order[i % len(order):] + order[:i % len(order)]
            out[arch] = {v: _session(opened, VARIANTS[v][0], data, blocks=VARIANTS[v][1]) for v in order}
        ph["spaces"][sp] = out
    ph.update(wall_s=time.time() - t0, loadavg_end=os.getloadavg(), steal_share=steal.share())
    state.setdefault("phases", []).append(ph)


def trace(state: dict, seconds: float = 100.0, window_s: float = 0.25) -> None:
    """The M canary of tiny alone for ``seconds``: each ``window_s`` window's median run time
    and the steal ticks the machine saw in it, to tell the host's states apart."""
    can = build_canary("tiny", arch=state.setdefault("ladder", {}).setdefault("tiny", ladder_archs("tiny"))["M"])
    opened = open_model(can.onnx, ep="cpu", threads=1)
    first_run(opened)
    run, rows, t_end = opened.runner.run, [], time.monotonic() + seconds
    while time.monotonic() < t_end:
        s0, t0, ts = read_steal_ticks(), time.monotonic(), []
        while time.monotonic() - t0 < window_s:
            ts.append(_timed(run))
        rows.append([float(np.median(ts)) * 1e3, (read_steal_ticks() or 0) - (s0 or 0)])
    state.setdefault("traces", []).append({"started": datetime.datetime.now().isoformat(timespec="seconds"),
                                           "window_s": window_s, "rows": rows})


def calib_block(state: dict, rounds: int = CAL_ROUNDS, runs: int = 30) -> None:
    """Can a device's first calibration block learn ``gamma``?  ``rounds`` rounds,
    ``CAL_GAP_S`` apart, each a plain session of M (the reference statistic's input) and
    paired sessions of the probes S and L against M; ``gamma`` fitted on this block alone
    (``f`` = the paired M median over the block's own reference)."""
    out = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "spaces": {}}
    for sp in N_ARCHS:
        names = state.setdefault("ladder", {}).setdefault(sp, ladder_archs(sp))
        can = {k: build_canary(sp, arch=a) for k, a in names.items()}
        m = open_model(can["M"].onnx, ep="cpu", threads=1)
        first_run(m)
        plain, obs = [], []
        for r in range(rounds):
            if r:
                time.sleep(CAL_GAP_S)
            plain.append(measure(can["M"].onnx, runs=runs).median_ms)
            for k in ("S", "L"):
                sess = _session({"M": m}, ["M"], can[k].onnx)
                obs.append((k, float(np.median(np.asarray(sess["arch_s"]) / np.asarray(sess["canary_s"]))),
                            float(np.median(sess["canary_s"]) * 1e3)))
        ref = float(np.quantile(plain, CALIBRATION_QUANTILE))
        fs = [c / ref for _, _, c in obs]
        out["spaces"][sp] = {"reference_ms": ref, "plain_ms": plain, "obs": obs,
                             "gamma": fit_gamma([(k, r, c / ref) for k, r, c in obs]),
                             "f_range": [min(fs), max(fs)]}
    state.setdefault("calib_blocks", []).append(out)


def _trace_lines(tr: dict, ref_ms: float) -> list[str]:
    """How long the quiet and contended states last, and the steal in each."""
    med = np.array([r[0] for r in tr["rows"]]) / ref_ms
    ticks = np.array([r[1] for r in tr["rows"]])
    slow = med > 1.1  # the canary more than 10% over its reference: the contended state
    runs, cur, n = [], slow[0], 0
    for x in slow:
        if x == cur:
            n += 1
        else:
            runs.append((cur, n))
            cur, n = x, 1
    runs.append((cur, n))
    w = tr["window_s"]
    mean_run = lambda flag: np.mean([k * w for f, k in runs if f == flag]) if any(f == flag for f, _ in runs) else 0  # noqa: E731
    return [f"Trace started {tr['started']}: the M canary alone for {len(med) * w:.0f} s, median of each {w} s window "
            f"over its reference: p10 {np.percentile(med, 10):.2f}, median {np.median(med):.2f}, p90 "
            f"{np.percentile(med, 90):.2f}. Windows in the contended state (> 1.10): {100 * slow.mean():.0f}%; "
            f"mean stretch {mean_run(True):.1f} s contended, {mean_run(False):.1f} s quiet. Steal ticks per window: "
            f"{ticks[slow].mean() if slow.any() else float('nan'):.2f} contended, "
            f"{ticks[~slow].mean() if (~slow).any() else float('nan'):.2f} quiet."]


def _median_ratios(sess: dict) -> dict:
    a, c, who = np.asarray(sess["arch_s"]), np.asarray(sess["canary_s"]), sess["partners"]
    who = np.asarray([who[i % len(who)] for i in range(len(a))])  # phases 0-1 stored the rotation only
    return {name: float(np.median(a[who == name] / c[who == name])) for name in dict.fromkeys(sess["partners"])}


def estimates(variant: str, sess: dict, refs: dict) -> dict:
    """The arch's latency (ms) by every estimator of ``variant``, from its session."""
    r = _median_ratios(sess)
    if variant == "default":
        return {"default": r["M"] * refs["M"]}
    x = {k: np.log(refs[k]) for k in r}
    y = {k: np.log(v) for k, v in r.items()}
    b, a = np.polyfit([x[k] for k in "SML"], [y[k] for k in "SML"], 1)
    out = {f"{variant}_M": r["M"] * refs["M"], f"{variant}_fit": float(np.exp(-a / b))}
    # the two canaries that bracket the arch (by its M-scaled estimate): a local two-point line
    lo, hi = ("S", "M") if np.log(r["M"] * refs["M"]) < x["M"] else ("M", "L")
    s = (y[lo] - y[hi]) / (x[hi] - x[lo])
    out[f"{variant}_bracket"] = float(np.exp(y[lo] / s + x[lo]))
    out[f"{variant}_compression"] = float(-b)
    return out


def bench_probes(space_name: str, archs: list[str]) -> list[str]:
    """The ``N_PROBES`` lowest- and highest-FLOPs archs: the repeated probes that ``state_gamma``
    learns its constant from (excluded from every comparison)."""
    space = get_space(space_name)
    flops = [arch_cost(space, space.parse(a), space.resolution(space.parse(a))).flops for a in archs]
    order = np.argsort(flops, kind="stable")
    return [archs[i] for i in list(order[:N_PROBES]) + list(order[-N_PROBES:])]


def _agreement(x, y) -> dict:
    x, y = np.asarray(x), np.asarray(y)
    r = y / x
    return {"within_10": float(np.mean(np.abs(r - 1) <= 0.10)), "within_5": float(np.mean(np.abs(r - 1) <= 0.05)),
            "tau": float(kendalltau(x, y)[0]), "median_ratio": float(np.median(r)), "sd_log": float(np.std(np.log(r)))}


def report(state: dict, out_md: Path) -> dict:
    phases = state["phases"]
    est = []  # per phase: space -> estimator -> arch -> ms
    descr = []
    for ph in phases:
        e, d = {}, {}
        for sp, archs in ph["spaces"].items():
            refs = {k: v["reference_ms"] for k, v in state["references"][sp].items()}
            e[sp] = {name: {} for name in ESTIMATORS}
            comp, speed = {}, []
            for arch, v in archs.items():
                for variant, sess in v.items():
                    for name, val in estimates(variant, sess, refs).items():
                        if name.endswith("compression"):
                            comp.setdefault(name, []).append(val)
                        else:
                            e[sp][name][arch] = val
                speed.append(np.median(v["default"]["canary_s"]) * 1e3 / refs["M"])
            d[sp] = {"canary_M_speed_factor": float(np.median(speed))} | {k: float(np.median(c)) for k, c in comp.items()}
        est.append(e)
        descr.append(d)
    # state_gamma: the default sessions decompressed with a gamma learned, for each pair of
    # phases compared, from the probes' sessions in the *other* phases (never from the pair)
    sessions = {sp: [{arch: (np.median(np.asarray(v["default"]["arch_s"]) / np.asarray(v["default"]["canary_s"])),
                             np.median(v["default"]["canary_s"]) * 1e3 / state["references"][sp]["M"]["reference_ms"])
                      for arch, v in ph["spaces"][sp].items()} for ph in phases] for sp in N_ARCHS}
    probes = {sp: bench_probes(sp, list(phases[0]["spaces"][sp])) for sp in N_ARCHS}
    # state_gamma_calib: one gamma per space for every phase, the median of the calibration
    # blocks' (``calib``), as a device's first calibration would fix it
    blocks = state.get("calib_blocks", [])
    calib_gamma = {sp: float(np.median([b["spaces"][sp]["gamma"] for b in blocks])) for sp in N_ARCHS} if blocks else {}
    for q, ph in enumerate(phases):
        for sp in calib_gamma:
            ref_m = state["references"][sp]["M"]["reference_ms"]
            est[q][sp]["state_gamma_calib"] = {a: decompress(*sessions[sp][q][a], calib_gamma[sp]) * ref_m
                                               for a in sessions[sp][q]}
    rows, gammas = [], {sp: [] for sp in N_ARCHS}
    for i, j in combinations(range(len(phases)), 2):
        gap = (datetime.datetime.fromisoformat(phases[j]["started"])
               - datetime.datetime.fromisoformat(phases[i]["started"])).total_seconds() / 60
        for sp in est[i]:
            others = [q for q in range(len(phases)) if q not in (i, j)]
            if len(others) >= 2:
                g = fit_gamma([(a, *sessions[sp][q][a]) for q in others for a in probes[sp]])
                gammas[sp].append(g)
                ref_m = state["references"][sp]["M"]["reference_ms"]
                for q in (i, j):
                    est[q][sp]["state_gamma"] = {a: decompress(*sessions[sp][q][a], g) * ref_m for a in sessions[sp][q]}
            for name in ESTIMATORS:
                ks = sorted((set(est[i][sp][name]) & set(est[j][sp][name])) - set(probes[sp]))
                if not ks:
                    continue
                rows.append({"a": i, "b": j, "gap_min": gap, "space": sp, "estimator": name,
                             **_agreement([est[i][sp][name][k] for k in ks], [est[j][sp][name][k] for k in ks])})
    summary = {}
    for sp in N_ARCHS:
        for name in ESTIMATORS:
            rs = [r for r in rows if r["space"] == sp and r["estimator"] == name]
            if rs:
                summary[f"{sp}/{name}"] = {k: float(np.mean([r[k] for r in rs])) for k in ("within_10", "within_5", "tau", "sd_log")} | {
                    "worst_within_10": float(min(r["within_10"] for r in rs)), "pairs": len(rs)}
    fp = device_fingerprint("cpu")
    res = {"date": datetime.date.today().isoformat(), "device": device_name(fp), "ladder": state["ladder"],
           "references": {sp: {k: v["reference_ms"] for k, v in refs.items()} for sp, refs in state["references"].items()},
           "phases": [{k: ph[k] for k in ("started", "wall_s", "loadavg_start", "loadavg_end", "steal_share")} | {"state": d}
                      for ph, d in zip(phases, descr)],
           "probes": probes, "gamma": {sp: [min(g), max(g)] if g else None for sp, g in gammas.items()},
           "comparisons": rows, "summary": summary}
    L = ["# Canary ladder: three canaries against the host's contended state", "",
         f"Measured {res['date']} by `benchmarks/canary_ladder.py` on `{res['device']}`, CPU EP, 1 thread, batch 1; "
         f"{N_ARCHS['tiny']} tiny (32x32) and {N_ARCHS['fbnet']} fbnet (224x224) archs of `canary_bench` "
         f"(`{ARCHS}`), {len(phases)} phases on an otherwise idle machine. Per arch and phase one session of each "
         f"variant, in rotating order: `default` ({PAIRS} pairs with the default canary M, today's protocol), "
         "`blocks` (17 pairs each with S, M, L in contiguous blocks) and, in phases 0-3, `ladder` (partners "
         "rotating S, M, L pair by pair). Estimators: `default`; `state_gamma` (the default sessions with the "
         "ratio decompressed by the host's state constant, fitted on probe archs in the other phases; probes "
         f"{N_PROBES} + {N_PROBES} per space, left out of every comparison); `*_M` (the M pairs of a ladder session "
         "only); `*_fit` (a line through log ratio vs log reference of S, M, L); `*_bracket` (the two canaries "
         "around the arch). See the module docstring for the models.", "",
         "Canaries (3%, 50%, 97% FLOPs of the default rule's seeded sample) and references (ms, calibrated "
         "interleaved in the first phase):", ""]
    for sp, names in state["ladder"].items():
        L.append(f"- {sp}: " + ", ".join(f"{k} `{a}` {res['references'][sp][k]:.4f}" for k, a in names.items()))
    L += ["", "Phases (speed factor: the M canary's median over its reference; compression: the fitted `s`, "
          "1 = every arch slows alike):", "", "| phase | started | wall s | load | steal share | tiny speed / compression (ladder, blocks) | fbnet speed / compression |",
          "|---:|---|---:|---|---:|---|---|"]
    for i, p in enumerate(res["phases"]):
        st = p["state"]
        L.append(f"| {i} | {p['started']} | {p['wall_s']:.0f} | {p['loadavg_start'][0]:.2f} -> {p['loadavg_end'][0]:.2f} | "
                 f"{100 * (p['steal_share'] or 0):.1f}% | " + " | ".join(
                     f"{st[sp]['canary_M_speed_factor']:.2f} / " + " ".join(f"{st[sp][k]:.3f}" for k in st[sp] if k.endswith("compression"))
                     for sp in N_ARCHS) + " |")
    slowdown = {}
    for ph in phases:
        for sp, archs in ph["spaces"].items():
            for v in archs.values():
                if "ladder" in v:
                    c, who = np.asarray(v["ladder"]["canary_s"]), v["ladder"]["partners"]
                    m = np.asarray([who[i % len(who)] for i in range(len(c))]) == "M"
                    slowdown.setdefault(sp, []).append(np.median(c[m]) / np.median(v["default"]["canary_s"]))
    if slowdown:
        res["ladder_M_slowdown"] = {sp: float(np.median(v)) for sp, v in slowdown.items()}
        L += ["", "Why `ladder` (rotating partners) fails: beside S and L, the M canary ran at a median " + ", ".join(
            f"{v:.2f}x ({sp})" for sp, v in res["ladder_M_slowdown"].items()) + " its time in the same arch's default "
              "session: three models in turn no longer keep their caches, and the arch's runs see a different "
              "predecessor each pair."]
    # raw slowdowns between the quietest and the most contended phase (tiny's default sessions)
    canary_med = [np.median([np.median(v["default"]["canary_s"]) for v in ph["spaces"]["tiny"].values()]) for ph in phases]
    q, c = int(np.argmin(canary_med)), int(np.argmax(canary_med))
    raw = lambda p, a: np.median(phases[p]["spaces"]["tiny"][a]["default"]["arch_s"])  # noqa: E731
    by_size = sorted(phases[0]["spaces"]["tiny"], key=lambda a: raw(q, a))
    res["slowdown"] = {"quiet_phase": q, "contended_phase": c, "canary": float(canary_med[c] / canary_med[q]),
                       "smallest5": float(np.median([raw(c, a) / raw(q, a) for a in by_size[:5]])),
                       "largest5": float(np.median([raw(c, a) / raw(q, a) for a in by_size[-5:]]))}
    sl = res["slowdown"]
    L += ["", f"Raw slowdown from the quietest phase ({q}) to the most contended ({c}), tiny: the canary "
              f"{sl['canary']:.2f}x, the 5 smallest archs ({1e6 * raw(q, by_size[0]):.0f}-{1e6 * raw(q, by_size[4]):.0f} us) "
              f"{sl['smallest5']:.2f}x (median), the 5 largest {sl['largest5']:.2f}x."]
    # do two sessions of an arch agree better when the canary ran at the same speed in both?
    same = {True: [], False: []}
    for i, j in combinations(range(len(phases)), 2):
        for a in sessions["tiny"][i]:
            (r1, f1), (r2, f2) = sessions["tiny"][i][a], sessions["tiny"][j][a]
            same[abs(f2 / f1 - 1) <= 0.10].append(r2 / r1)
    res["same_state"] = {str(k): {"pairs": len(v), "within_10": float(np.mean(np.abs(np.asarray(v) - 1) <= 0.10)),
                                  "within_5": float(np.mean(np.abs(np.asarray(v) - 1) <= 0.05))}
                         for k, v in same.items() if v}
    ss = res["same_state"]
    L += ["", "Session pairs of tiny's default protocol (every arch, every pair of phases): when the canary ran at "
              "the same speed in both (within 10%) they agreed within +-10% / +-5% for "
              f"{100 * ss['True']['within_10']:.0f}% / {100 * ss['True']['within_5']:.0f}% ({ss['True']['pairs']} pairs); "
              f"otherwise {100 * ss['False']['within_10']:.0f}% / {100 * ss['False']['within_5']:.0f}% "
              f"({ss['False']['pairs']} pairs)."]
    for tr in state.get("traces", []):
        L += [""] + _trace_lines(tr, state["references"]["tiny"]["M"]["reference_ms"])
    for b in blocks:
        L += ["", f"Calibration block {b['started']} ({CAL_ROUNDS} rounds {CAL_GAP_S:g} s apart, probes S and L "
              "paired with M): " + "; ".join(f"{sp} gamma {v['gamma']:.2f}, f {v['f_range'][0]:.2f}-{v['f_range'][1]:.2f}"
                                             for sp, v in b["spaces"].items())]
    if calib_gamma:
        res["calib_gamma"] = calib_gamma
        L += ["", "`state_gamma_calib` uses the median over the blocks: " + ", ".join(
            f"{sp} {g:.2f}" for sp, g in calib_gamma.items()) + "."]
    L += ["", "state_gamma's fitted constant over the pairs: " + ", ".join(
        f"{sp} {g[0]:.2f} .. {g[1]:.2f}" for sp, g in res["gamma"].items() if g) + ".", "",
          "Every pair of phases, mean over pairs (worst pair within +-10% in brackets):", "",
          "| space | estimator | within +-10% | within +-5% | Kendall tau | sd of log ratio |", "|---|---|---:|---:|---:|---:|"]
    for key, s in summary.items():
        sp, name = key.split("/")
        L.append(f"| {sp} | {name} | {100 * s['within_10']:.0f}% ({100 * s['worst_within_10']:.0f}%) | "
                 f"{100 * s['within_5']:.0f}% | {s['tau']:.3f} | {s['sd_log']:.3f} |")
    L += ["", "Per pair of phases:", "", "| phases | gap min | space | estimator | within +-10% | within +-5% | tau | median later/first |",
          "|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        L.append(f"| {r['a']} vs {r['b']} | {r['gap_min']:.0f} | {r['space']} | {r['estimator']} | {100 * r['within_10']:.0f}% | "
                 f"{100 * r['within_5']:.0f}% | {r['tau']:.3f} | {r['median_ratio']:.3f} |")
    out_md.write_text("\n".join(L) + "\n")
    out_md.with_suffix(".json").write_text(json.dumps(res, indent=1))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["phase", "trace", "calib", "report"])
    ap.add_argument("--state", type=Path, default=STATE)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/canary_ladder.md"))
    a = ap.parse_args(argv)
    state = json.loads(a.state.read_text()) if a.state.exists() else {}
    if a.what in ("phase", "trace", "calib"):
        {"phase": phase, "trace": trace, "calib": calib_block}[a.what](state)
        a.state.parent.mkdir(parents=True, exist_ok=True)
        a.state.write_text(json.dumps(state))
        if a.what == "phase":
            p = state["phases"][-1]
            print(f"phase {len(state['phases']) - 1}: {p['wall_s']:.0f} s, steal {100 * (p['steal_share'] or 0):.1f}%")
    else:
        res = report(state, a.out)
        for k, s in res["summary"].items():
            print(k, {m: round(v, 3) for m, v in s.items()})


if __name__ == "__main__":
    main()
