"""Which architectures a campaign measures: ``uniform`` or ``stratified`` (default).

Why stratified: a uniform draw over a space of 22 independent layers concentrates FLOPs
(and latency) near the middle (central limit theorem), so a predictor trained on it sees
few very fast or very slow models and extrapolates badly there.  ``stratified`` first
draws a candidate pool in which each candidate tilts every layer's choice towards cheap
or expensive ops by a random amount (a softmax over the choice's marginal FLOPs with a
random temperature sign), then bins the pool by log-FLOPs into equal-width bins and takes
one architecture per bin round-robin, so the result spans the whole FLOPs range evenly.
Both samplers are seeded and skip ``exclude`` (architectures already measured).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from hwnas.errors import ProfilingError, valid_list
from hwnas.space import Arch, SearchSpace

SAMPLERS = ("stratified", "uniform")
POOL_FACTOR = 10
MIN_POOL = 2000
TILT = 4.0
ENUMERATE_MAX = 200_000


def sample_archs(space: SearchSpace, n: int, *, sampler: str = "stratified", seed: int = 0,
                 exclude=(), resolution: int | None = None) -> list[Arch]:
    """``n`` distinct architectures not in ``exclude`` (canonical strings or Archs)."""
    if sampler not in SAMPLERS:
        raise ProfilingError(f"unknown sampler {sampler!r}; valid: {valid_list(SAMPLERS)}")
    if n < 0:
        raise ProfilingError(f"number of archs must be >= 0, got {n}")
    exclude = {str(a) for a in exclude}
    left = space.size() - len(exclude)
    if n > left:
        raise ProfilingError(f"space {space.name!r} has only {left} unmeasured architectures, asked for {n}")
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    if sampler == "uniform":
        return _distinct(lambda: space.sample(rng), n, exclude, space)
    return _stratified(space, n, rng, exclude, resolution)


def _distinct(draw, n: int, exclude: set, space: SearchSpace) -> list[Arch]:
    out, seen = [], set(exclude)
    for _ in range(200 * n + 10_000):
        a = draw()
        if str(a) not in seen:
            seen.add(str(a))
            out.append(a)
            if len(out) == n:
                return out
    raise ProfilingError(f"could not draw {n} new distinct architectures of {space.name!r} "
                         f"(got {len(out)}); the space is nearly exhausted")


def marginal_flops(space: SearchSpace, resolution: int | None = None) -> list[np.ndarray]:
    """Per decision, the FLOPs of the cheapest arch with that decision set to each choice."""
    from hwnas.cost import arch_cost, cost_extremes

    (_, cheapest), _ = cost_extremes(space, "flops")
    out = []
    for i, d in enumerate(space.decisions):
        vals = []
        for tok in d.choices:
            toks = list(cheapest.tokens)
            toks[i] = tok
            vals.append(arch_cost(space, Arch(space.name, tuple(toks)), resolution).flops)
        out.append(np.log(np.asarray(vals, dtype=np.float64)))
    return out


def _stratified(space: SearchSpace, n: int, rng: np.random.Generator, exclude: set,
                resolution: int | None) -> list[Arch]:
    from hwnas.cost import arch_cost

    z = []
    for m in marginal_flops(space, resolution):
        s = m.std()
        z.append((m - m.mean()) / s if s > 0 else np.zeros_like(m))

    def draw() -> Arch:
        t = rng.uniform(-1.0, 1.0) * TILT
        idx = []
        for zi in z:
            logits = t * zi
            p = np.exp(logits - logits.max())
            idx.append(int(rng.choice(len(zi), p=p / p.sum())))
        return space.from_indices(idx)

    pool_size = max(POOL_FACTOR * n, MIN_POOL)
    if space.size() <= ENUMERATE_MAX and space.size() - len(exclude) <= 4 * pool_size:
        # a small space: the pool is every unmeasured architecture
        pool = [a for a in map(space.from_indices, itertools.product(*(range(len(d.choices))
                                                                       for d in space.decisions)))
                if str(a) not in exclude]
    else:
        pool = _distinct(draw, pool_size, exclude, space)
    logf = np.array([math.log(arch_cost(space, a, resolution).flops) for a in pool])
    bins = max(1, min(n, 20))
    lo, hi = float(logf.min()), float(logf.max())
    which = np.minimum(((logf - lo) / max(hi - lo, 1e-12) * bins).astype(int), bins - 1)
    members = [list(rng.permutation(np.flatnonzero(which == b))) for b in range(bins)]
    out = []
    while len(out) < n:
        for b in range(bins):
            if members[b] and len(out) < n:
                out.append(pool[members[b].pop()])
    return out
