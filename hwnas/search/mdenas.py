"""MdeNAS: Multinomial Distribution Learning (Zheng et al., ICCV 2019, arXiv 1905.07529).

The update as in ``../shared/research/seed_strategies.md`` 3.2 (the paper's formula, read in a
reading note and implemented identically in ``cogsys-tuebingen/uninas``'s ``MdlStrategy``;
the authors' lab code ``MAC-AutoML/XNAS`` differs in details listed there):

- per decision ``i`` and choice ``j``: ``p`` (start uniform), ``H^e`` (times the choice was in a
  told arch: "epochs" trained) and ``H^a`` (the latest reward of an arch containing it);
- after every told arch (one tell = one of the paper's epochs), for every choice ``j``::

      Delta_j = sum_k [H^e_j < H^e_k and H^a_j > H^a_k] - sum_k [H^e_j > H^e_k and H^a_j < H^a_k]
      p_j <- p_j + alpha * Delta_j          (alpha = 0.01)

  a choice trained *less* but scoring *higher* than another gains, one trained *more* but
  scoring *lower* loses (the "performance ranking hypothesis");
- ``sum_j Delta_j = 0`` so ``sum p`` is kept; if a ``p_j`` goes negative, all are shifted by
  ``-min p`` and renormalised (UniNAS's repair); a choice never told is neutral (it takes part
  in no comparison: our reading, which makes the "neutral" property hold for any reward sign);
- sampling is from ``p``; the result is ``argmax p`` per decision.

The rule need not drive ``p`` to one-hot (the brief's caveat); its entropy is reported, not
forced down.  With whole-arch rewards the latest reward of one arch says little about one of
its choices (the partners in the other decisions move it as much): on the strategy battery's
noisy additive reward the paper's ``H^a`` left MdeNAS at a median gap of 0.70 of the reward
range from the optimum (worse than random search).  ``accuracy="mean"`` (an hwnas option, not
the paper's) keeps the running mean reward of every arch with the choice instead.  The authors reward validation accuracy; hwnas's loop defaults this strategy
to ``reward="acc"``.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import SearchError
from hwnas.search.base import register_strategy
from hwnas.search.table import ProbTableStrategy
from hwnas.space import SearchSpace


def mdl_delta(epochs: np.ndarray, acc: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``Delta_j`` of the formula above over the choices that were seen (others: 0)."""
    e, a = epochs[:, None], acc[:, None]
    both = seen[:, None] & seen[None, :]
    gain = (e < e.T) & (a > a.T) & both
    loss = (e > e.T) & (a < a.T) & both
    return gain.sum(1).astype(np.float64) - loss.sum(1).astype(np.float64)


def repair(p: np.ndarray) -> np.ndarray:
    """Shift by ``-min`` when a probability went negative, then renormalise."""
    if p.min() < 0:
        p = p - p.min()
    s = p.sum()
    return p / s if s > 0 else np.full_like(p, 1.0 / len(p))


@register_strategy("mdenas")
class MdeNAS(ProbTableStrategy):
    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 1, alpha: float = 0.01,
                 accuracy: str = "latest"):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        if not alpha > 0:
            raise SearchError(f"alpha must be > 0, got {alpha}")
        if accuracy not in ("latest", "mean"):
            raise SearchError(f"accuracy must be 'latest' (the paper's H^a) or 'mean', got {accuracy!r}")
        self.alpha = float(alpha)
        self.accuracy = accuracy
        self.epochs = [np.zeros(len(d.choices)) for d in space.decisions]
        self.acc = [np.zeros(len(d.choices)) for d in space.decisions]

    def _update(self, archs, rewards, penalty) -> None:
        if penalty is not None:
            raise SearchError("mdenas updates its table by rules, not gradients: a differentiable penalty cannot act "
                              "on it (use --penalty hinge or mnas)")
        for a, r in zip(archs, rewards):
            for i, j in enumerate(self.space.indices(a)):
                self.epochs[i][j] += 1
                if self.accuracy == "latest":
                    self.acc[i][j] = float(r)
                else:  # running mean over every told arch with this choice
                    self.acc[i][j] += (float(r) - self.acc[i][j]) / self.epochs[i][j]
            for i in range(len(self.table)):
                delta = mdl_delta(self.epochs[i], self.acc[i], self.epochs[i] > 0)
                self.table[i] = repair(self.table[i] + self.alpha * delta)
        self._sync()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(epochs=[e.tolist() for e in self.epochs], acc=[a.tolist() for a in self.acc])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.epochs = [np.asarray(e, dtype=np.float64) for e in state["epochs"]]
        self.acc = [np.asarray(a, dtype=np.float64) for a in state["acc"]]
