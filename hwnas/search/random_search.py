"""Random search: uniform samples, best by mean reward (Li & Talwalkar 2019, with shared weights).

The baseline every other strategy must beat: it draws ``samples_per_step`` architectures
uniformly per step, evaluates them like PARSEC does, and keeps the one with the highest
mean (penalty-shaped) reward.  It learns nothing, so it has no ``probs``/``entropy``.
"""
from __future__ import annotations

from hwnas.search.base import Strategy, register_strategy
from hwnas.space import Arch


@register_strategy("random")
class RandomSearch(Strategy):
    """Uniform sampling; ``best()`` is the best mean reward seen."""

    def _propose(self, n: int) -> list[Arch]:
        return [self.space.sample(self.rng) for _ in range(n)]
