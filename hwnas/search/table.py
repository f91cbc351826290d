"""A probability table per decision that rules (not gradients) update: the base of DDPNAS and MdeNAS.

Why a separate base from ``DistributionStrategy``: DDPNAS prunes choices and MdeNAS moves
probability by pairwise comparisons; neither has logits an optimiser could follow, so the
differentiable penalties (``differentiable``, ``logcost``) do not apply to them
(``differentiable = False``; the loop refuses the combination).  The table is mirrored into a
``CategoricalDistribution`` (``log p``, a finite floor for pruned choices) so that entropy,
``top_k``, ``argmax`` and the search log work as for PARSEC and FP-NAS.
"""
from __future__ import annotations

import numpy as np
import torch

from hwnas.search.base import DistributionViews, Strategy
from hwnas.search.distribution import CategoricalDistribution
from hwnas.space import SearchSpace

#: logit of a pruned choice: finite, so entropy and top-k stay NaN-free, and exp() is 0
FLOOR = -1e4


class ProbTableStrategy(DistributionViews, Strategy):
    differentiable = False

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 1):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        self.table = [np.full(len(d.choices), 1.0 / len(d.choices)) for d in space.decisions]
        self.alive = [np.ones(len(d.choices), dtype=bool) for d in space.decisions]
        self.dist = CategoricalDistribution(space, factorized=False)
        self._sync()

    def _sync(self) -> None:
        """Table -> the distribution's logits (renormalised over alive choices)."""
        with torch.no_grad():
            for p, t, a in zip(self.dist.params, self.table, self.alive):
                q = np.where(a, np.maximum(t, 0.0), 0.0)
                q = q / q.sum() if q.sum() > 0 else a / a.sum()
                p.copy_(torch.as_tensor(np.where(q > 0, np.log(np.maximum(q, 1e-300)), FLOOR)))

    # -- persistence -------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(table=[t.tolist() for t in self.table], alive=[a.tolist() for a in self.alive])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.table = [np.asarray(t, dtype=np.float64) for t in state["table"]]
        self.alive = [np.asarray(a, dtype=bool) for a in state["alive"]]
        self._sync()
