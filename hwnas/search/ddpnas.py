"""DDPNAS: Dynamic Distribution Pruning (Zheng et al., arXiv 1905.13543).

Read in the first author's code (``MAC-AutoML/XNAS @ 92720aa``,
``search_algorithm/Category_DDPNAS.py`` and ``one_shot_search.py``; summarised in
``../shared/research/seed_strategies.md`` 3.1), not only the paper:

- every decision keeps a set of alive choices ``R_i`` and a score ``theta_i``;
- a *round* trains and scores every alive choice of every decision once: the i-th arch of a
  round takes, per decision, the next choice of a fresh permutation of ``R_i`` (random
  partners in the other decisions).  hwnas's decisions have unequal sizes (the authors'
  spaces did not), so a round lasts ``L = max_i |R_i|`` asks and a decision whose queue
  empties first is refilled with a new permutation; ``P_t[i, j]`` is the *mean* reward
  credited to choice ``j`` in round ``t`` (the code overwrites; with refills a choice can be
  credited twice);
- after ``pruning_step`` rounds (3), ``E_i = mean_t softmax(P_t[i, :] / temperature)``
  (``temperature = 0.01``: the code's ``softmax(100 * accuracy)``), then
  ``theta_i = E_i + score_decay * theta_i`` (V1, ``score_decay = 0.5``), and the alive choice
  with the lowest ``theta_i`` is pruned from every decision that has more than one;
- it ends when one choice is left per decision; that arch is the result.

Sampling is therefore *not* from ``theta`` (``theta`` decides only what is pruned); ``probs()``
shows ``theta`` renormalised over the alive choices, pruned ones exactly 0.  The authors
reward validation accuracy in [0, 1] (the temperature assumes that scale); hwnas's loop gives
it ``reward="acc"`` by default for this strategy.  Number of asks to converge:
``pruning_step * sum_{n=2}^{C} n`` for the largest decision size ``C`` (132 on ``micro``, 972 on
``tiny``).  Not ported: the authors' multiple-choice knapsack for the final arch under a
FLOPs budget (hwnas's ``select_final`` applies the budget instead).
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import SearchError
from hwnas.search.base import register_strategy
from hwnas.search.table import ProbTableStrategy
from hwnas.space import Arch, SearchSpace


@register_strategy("ddpnas")
class DDPNAS(ProbTableStrategy):
    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 1, pruning_step: int = 3,
                 temperature: float = 0.01, score_decay: float = 0.5):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        if int(pruning_step) < 1:
            raise SearchError(f"pruning_step must be >= 1, got {pruning_step}")
        if not temperature > 0:
            raise SearchError(f"temperature must be > 0, got {temperature}")
        self.pruning_step = int(pruning_step)
        self.temperature = float(temperature)
        self.score_decay = float(score_decay)
        self.round = 0  # rounds done since the last prune
        self.asked_in_round = 0
        self.prunes: list[list[int | None]] = []  # per prune event, the choice removed per decision
        self._new_round_tables()
        self._queues = [self._permutation(i) for i in range(len(space.decisions))]

    # -- rounds ------------------------------------------------------------
    def _permutation(self, i: int) -> list[int]:
        return [int(j) for j in self.rng.permutation(np.flatnonzero(self.alive[i]))]

    def _new_round_tables(self) -> None:
        self._sum = [np.zeros((self.pruning_step, len(d.choices))) for d in self.space.decisions]
        self._count = [np.zeros((self.pruning_step, len(d.choices))) for d in self.space.decisions]

    def round_length(self) -> int:
        return int(max(a.sum() for a in self.alive))

    @property
    def converged(self) -> bool:
        return all(a.sum() == 1 for a in self.alive)

    def _propose(self, n: int) -> list[Arch]:
        out = []
        for _ in range(n):
            row = []
            for i, q in enumerate(self._queues):
                if not q:
                    q.extend(self._permutation(i))
                row.append(q.pop())
            out.append(self.space.from_indices(row))
        return out

    def _update(self, archs, rewards, penalty) -> None:
        if penalty is not None:
            raise SearchError("ddpnas updates its table by rules, not gradients: a differentiable penalty cannot act "
                              "on it (use --penalty hinge or mnas)")
        for a, r in zip(archs, rewards):
            if self.converged:
                break
            t = min(self.round, self.pruning_step - 1)
            for i, j in enumerate(self.space.indices(a)):
                self._sum[i][t, j] += float(r)
                self._count[i][t, j] += 1
            self.asked_in_round += 1
            if self.asked_in_round >= self.round_length():
                self._end_round()

    def _end_round(self) -> None:
        self.round += 1
        self.asked_in_round = 0
        if self.round >= self.pruning_step:
            self._prune()
            self.round = 0
            self._new_round_tables()
        self._queues = [self._permutation(i) for i in range(len(self.space.decisions))]

    def _prune(self) -> None:
        removed: list[int | None] = []
        for i in range(len(self.space.decisions)):
            p = np.where(self._count[i] > 0, self._sum[i] / np.maximum(self._count[i], 1), 0.0)
            z = p / self.temperature
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            e = (e / e.sum(axis=1, keepdims=True)).mean(0)
            self.table[i] = e + self.score_decay * self.table[i]
            if self.alive[i].sum() > 1:
                alive = np.flatnonzero(self.alive[i])
                k = int(alive[np.argmin(self.table[i][alive])])
                self.alive[i][k] = False
                removed.append(k)
            else:
                removed.append(None)
        self.prunes.append(removed)
        self._sync()

    # -- persistence -------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(round=self.round, asked_in_round=self.asked_in_round, prunes=self.prunes,
                     sum=[s.tolist() for s in self._sum], count=[c.tolist() for c in self._count],
                     queues=[list(q) for q in self._queues])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.round, self.asked_in_round = int(state["round"]), int(state["asked_in_round"])
        self.prunes = [list(p) for p in state["prunes"]]
        self._sum = [np.asarray(s, dtype=np.float64) for s in state["sum"]]
        self._count = [np.asarray(c, dtype=np.float64) for c in state["count"]]
        self._queues = [list(map(int, q)) for q in state["queues"]]
