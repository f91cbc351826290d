"""CPU steal: the share of this machine's CPU time its hypervisor gave to someone else.

Why: on a shared VM the canary shows the host's state as a speed factor, but not why.  On
our 2-vCPU EPYC VM the host has a contended state in which the canary runs 1.15-1.25x its
reference, and high steal is a one-way sign of it: in 11 phases of
``benchmarks/canary_ladder.py`` every phase with 2% steal or more ran the canary at
1.17-1.23x, while phases below 1.2% ran it anywhere from 0.94x to 1.23x; in a 100 s trace
the contended quarter-seconds had twice the steal ticks of the quiet ones
(``benchmarks/results/canary_ladder.md``).  In that state small models slow by more than
the canary (tiny's five smallest archs slowed 1.71x where the canary slowed 1.31x), which
no single-canary ratio cancels, so a campaign and a final check report the steal they saw
and a campaign warns above ``STEAL_WARN``.  Linux only (``/proc/stat``'s 8th CPU field, in clock ticks);
elsewhere there is nothing to read and the share is ``None``.
"""
from __future__ import annotations

import os
import time

STEAL_WARN = 0.015
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_steal_ticks(stat_text: str) -> int | None:
    """The steal ticks of the aggregate ``cpu`` line of a ``/proc/stat`` text, or None when
    the line is missing or too old to carry the field (kernels before 2.6.11)."""
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return int(parts[8]) if len(parts) > 8 else None
    return None


def read_steal_ticks(path: str = "/proc/stat") -> int | None:
    try:
        with open(path) as f:
            return parse_steal_ticks(f.read())
    except (OSError, ValueError):
        return None


class StealMeter:
    """Steal over an interval, as a share of the CPU time of all the machine's CPUs."""

    def __init__(self, path: str = "/proc/stat"):
        self.path = path
        self._t0 = time.monotonic()
        self._s0 = read_steal_ticks(path)

    def share(self) -> float | None:
        s1 = read_steal_ticks(self.path)
        dt = time.monotonic() - self._t0
        if self._s0 is None or s1 is None or dt <= 0:
            return None
        return (s1 - self._s0) / _TICKS / (dt * (os.cpu_count() or 1))


def contention_note(share: float | None) -> str:
    """A short remark for a measured latency taken while the host was contended, else ''."""
    if share is None or share <= STEAL_WARN:
        return ""
    return f" (host busy: {100 * share:.1f}% CPU steal; small models may read high)"
