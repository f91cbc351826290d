"""The machine's speed over time, from the canary medians stored with every paired row.

Why: the canary's raw median at the moment an arch was measured, divided by the device's
reference, is how fast the machine ran then (1 = as fast as when it was calibrated, 1.3 =
30% slower).  The ratios cancel that factor, so it does not reach ``latency_ms``; but a
trend (thermal throttling, a noisy neighbour that moved in, a BIOS or driver update) is
worth seeing, and a swing beyond what any ratio can absorb is worth a warning.
"""
from __future__ import annotations

import time

import numpy as np

from hwnas.errors import DataError


def drift_report(store, space: str | None = None) -> list[dict]:
    """Per device with paired rows: rows, speed factor min/median/max and the series."""
    out = []
    for dev in store.devices():
        series = store.speed_series(dev["id"], space)
        if not series:
            continue
        f = np.asarray([x for _, x in series])
        out.append({"device_id": dev["id"], "name": dev["name"], "rows": len(f), "min": float(f.min()),
                    "median": float(np.median(f)), "max": float(f.max()),
                    "swing": float(f.max() / f.min()), "series": series})
    if not out:
        raise DataError(f"{str(store.path)!r} holds no paired (canary-calibrated) rows"
                        + (f" of space {space!r}" if space else "") + "; profile without --no-canary first")
    return out


def plot_drift(report: list[dict], path) -> None:
    """Speed factor against measurement time, one line per device (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    for d in report:
        t = [time.mktime(time.strptime(c[:19], "%Y-%m-%dT%H:%M:%S")) for c, _ in d["series"]]
        t0 = min(t)
        ax.plot([(x - t0) / 60 for x in t], [f for _, f in d["series"]], ".", ms=3,
                label=f"{d['name']} ({d['device_id']})")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("minutes since the first row")
    ax.set_ylabel("canary median / reference")
    ax.set_title("machine speed during profiling (1 = as calibrated; higher = slower)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
