"""Which state constant would have served a canary benchmark's archs best?  A sweep over its rows.

``canary_bench.py`` stores, per phase, each arch's ``paired`` latency (decompressed with the
constant of phase first's calibration) and ``paired_ratio`` (the same session, plain
ratio x reference).  From the two, each row's speed factor ``f`` follows
(``log r_d = log r / (1 - gamma log f)``, ``hwnas.profiling.contention``), so any other
constant can be applied to the very same sessions.  Rows whose ratio is within 5% of 1
carry no information on ``f`` and are left out.  The table: re-measurement agreement with
each constant of a grid, per space and phase comparison.

    gunzip -k benchmarks/results/canary_state_m1.json.gz   # or a state of your own run
    .venv/bin/python benchmarks/gamma_sweep.py --state benchmarks/results/canary_state_m1.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GRID = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4)
PAIRS = (("second", "first"), ("third", "first"), ("fourth", "first"), ("fifth", "fourth"))


def rows(state: dict, space: str) -> dict:
    """{phase: {arch: (log ratio, log f)}} for the rows where ``f`` is identified."""
    gamma, ref = state["canary"][space]["gamma"], state["canary"][space]["reference_ms"]
    out = {}
    for phase, ph in state["phases"].items():
        lat = ph["latency"].get(space) or {}
        if "paired" not in lat or "paired_ratio" not in lat:
            continue
        got = {}
        for arch, ms in lat["paired"].items():
            lr, lrd = np.log(lat["paired_ratio"][arch] / ref), np.log(ms / ref)
            if gamma and abs(lrd) > 0.05:
                got[arch] = (lr, (1 - lr / lrd) / gamma)
        out[phase] = got
    return out


def agreement(data: dict, later: str, first: str, g: float) -> tuple[float, float, int]:
    def dec(lr, lf):
        return lr / np.clip(1 - g * lf, 0.5, 2.0)

    common = sorted(set(data.get(later, {})) & set(data.get(first, {})))
    dev = np.array([abs(np.exp(dec(*data[later][a]) - dec(*data[first][a])) - 1) for a in common])
    return float((dev <= 0.10).mean()), float((dev <= 0.05).mean()), len(common)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<state stem>_gamma_sweep.md")
    a = ap.parse_args(argv)
    state = json.loads(a.state.read_text())
    out = a.out or Path("benchmarks/results") / f"{a.state.stem}_gamma_sweep.md"
    L = ["# The state constant, swept over a canary benchmark's own rows", "",
         f"`benchmarks/gamma_sweep.py --state {a.state}`: each cell is within +-10% / within +-5% of the later "
         "phase against the earlier one, with every row decompressed by that constant (phase first's "
         "calibration learned " + ", ".join(f"{sp} {state['canary'][sp]['gamma']:.2f}" for sp in state["canary"])
         + "; rows whose ratio is within 5% of 1 are left out).", ""]
    for space in state["canary"]:
        data = rows(state, space)
        pairs = [p for p in PAIRS if p[0] in data and p[1] in data]
        if not pairs:
            continue
        L += [f"## {space}", "", "| gamma | " + " | ".join(f"{x} vs {y}" for x, y in pairs) + " |",
              "|---:|" + "---:|" * len(pairs)]
        for g in GRID:
            cells = []
            for x, y in pairs:
                w10, w5, n = agreement(data, x, y, g)
                cells.append(f"{100 * w10:.0f}% / {100 * w5:.0f}% (n {n})")
            L.append(f"| {g:+.1f} | " + " | ".join(cells) + " |")
        L.append("")
    out.write_text("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    main()
