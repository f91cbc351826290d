"""Evolutionary search, SPOS-style (Guo et al., ECCV 2020, Sec. 3.3), usable on its own.

Settings are the ones BN-NAS's ``search/ea.py`` and MMRazor's GreedyNAS search config agree on
(``../shared/research/seed_strategies.md`` E4): population 50, the top 10 as parents, then per
generation 25 mutations (each decision re-drawn with probability ``m_prob = 0.1``) and 25
uniform crossovers of two parents; an arch already evaluated is not proposed again (up to
``max_tries`` draws per slot, then a fresh random arch).  ``ask()`` returns one generation;
fitness is the mean reward told (``Strategy._records``), and ``ranked`` the best seen.

Budgets: when the loop sets ``feasible`` (an arch -> bool predicate from the run's budget),
every proposal must pass it, as SPOS's search rejects candidates over the FLOPs limit; the
rewards are still shaped by the run's penalty.  It runs inside the coupled loop (the supernet
trains on what it proposes) or, two-stage as SPOS, in the search stage on the frozen supernet
(``search_stage_steps``).  ``seed_population`` starts generation 0 from given archs instead of
random ones (GreedyNAS: the best paths of its candidate pool, ``greedynas.py``).
"""
from __future__ import annotations

from typing import Callable, Sequence

from hwnas.errors import SearchError
from hwnas.search.base import register_strategy, Strategy
from hwnas.space import Arch, SearchSpace


@register_strategy("evolution")
class Evolution(Strategy):
    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 50, population: int | None = None,
                 parents: int = 10, mutations: int = 25, crossovers: int = 25, m_prob: float = 0.1,
                 max_tries: int = 50):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        self.population = int(samples_per_step if population is None else population)
        if min(self.population, parents) < 1 or min(mutations, crossovers) < 0 or mutations + crossovers < 1:
            raise SearchError("evolution needs population >= 1, parents >= 1 and mutations + crossovers >= 1, got "
                              f"{self.population}, {parents}, {mutations} + {crossovers}")
        if not 0.0 < m_prob <= 1.0:
            raise SearchError(f"m_prob must be in (0, 1], got {m_prob}")
        self.parents, self.mutations, self.crossovers = int(parents), int(mutations), int(crossovers)
        self.m_prob, self.max_tries = float(m_prob), int(max_tries)
        self.generation = 0
        self.feasible: Callable[[Arch], bool] | None = None
        self.initial: list[str] = []  # generation 0 starts from these (``seed_population``)

    def seed_population(self, archs: Sequence[Arch]) -> None:
        """Start generation 0 from ``archs`` (those that meet ``feasible`` and are new), filling
        the rest of the population with random archs as usual."""
        if self.generation:
            raise SearchError(f"seed_population must come before the first ask; this evolution is at "
                              f"generation {self.generation}")
        self.initial = [str(a) for a in archs]

    def num_samples(self) -> int:
        return self.population if self.generation == 0 else self.mutations + self.crossovers

    def _ok(self, a: Arch, taken: set) -> bool:
        return str(a) not in taken and str(a) not in self._records and (self.feasible is None or self.feasible(a))

    def _random(self, taken: set) -> Arch:
        for _ in range(self.max_tries):
            a = self.space.sample(self.rng)
            if self._ok(a, taken):
                return a
        return self.space.sample(self.rng)

    def _propose(self, n: int) -> list[Arch]:
        taken: set[str] = set()
        out: list[Arch] = []
        top = self.ranked(self.parents) if self.generation > 0 else []
        plan = (["random"] * n if not top else
                ["mutate"] * min(n, self.mutations) + ["cross"] * max(0, n - self.mutations))
        seeds = iter(self.initial if self.generation == 0 else ())
        for kind in plan:
            a = next((c for c in map(self.space.parse, seeds) if self._ok(c, taken)), None) if kind == "random" else None
            if a is None and kind != "random":
                for _ in range(self.max_tries):
                    cand = self._mutate(top) if kind == "mutate" else self._cross(top)
                    if self._ok(cand, taken):
                        a = cand
                        break
            a = a if a is not None else self._random(taken)
            taken.add(str(a))
            out.append(a)
        self.generation += 1
        return out

    def _mutate(self, top: list[Arch]) -> Arch:
        parent = self.space.indices(top[self.rng.integers(len(top))])
        row = [int(self.rng.integers(len(d.choices))) if self.rng.random() < self.m_prob else int(c)
               for c, d in zip(parent, self.space.decisions)]
        return self.space.from_indices(row)

    def _cross(self, top: list[Arch]) -> Arch:
        i, j = self.rng.choice(len(top), size=2, replace=len(top) < 2)
        a, b = self.space.indices(top[i]), self.space.indices(top[j])
        return self.space.from_indices([int(x if self.rng.random() < 0.5 else y) for x, y in zip(a, b)])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["generation"] = self.generation
        state["initial"] = list(self.initial)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generation = int(state["generation"])
        self.initial = list(state.get("initial", []))  # absent in states written before seeding existed
