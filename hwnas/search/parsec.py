"""PARSEC: Probabilistic neural ARchitecture SEarCh (Casale, Gordon & Fusi, 2019).

PARSEC learns a distribution ``p(alpha | pi)`` over architectures (an independent
categorical per decision, Sec. 3) by empirical Bayes: maximise the marginal likelihood
``log E_{alpha ~ p(alpha|pi)} p(y | X, v, alpha)``.  Its Monte Carlo gradient with ``K``
samples (their eq. for the importance-weighted estimator) is

    grad_pi  ~=  sum_k  omega_k * grad_pi log p(alpha_k | pi),
    omega_k   =  p(y | X, v, alpha_k) / sum_j p(y | X, v, alpha_j)

i.e. self-normalised importance weights of the ``K`` sampled architectures, computed on
held-out data.  Every step draws a *fixed* ``K`` (``samples_per_step``).

What we implement (``_update``):

- ``estimator="normalised"`` (default): rewards ``r_k`` (``-val loss`` or accuracy, shaped
  by the budget penalty) are standardised with a moving baseline, ``A_k = (r_k - b) / s``
  where ``b`` and ``s^2`` are exponential moving averages (decay ``baseline_decay``) of the
  reward mean and variance, and the surrogate loss is
  ``L = -(1/K) sum_k A_k log p(alpha_k | pi)`` (REINFORCE, Williams 1992, with a
  baseline).  Why: it is scale-free across reward types and budgets, and it still works
  when FP-NAS's adaptive ``K`` drops to 1 or 2, where self-normalised weights degenerate
  (with ``K = 1``, ``omega = 1`` and the update only reinforces whatever was sampled).
- ``estimator="importance"``: PARSEC's weights ``omega = softmax(r / tau)``, ``tau`` the
  batch's reward std (so ``omega`` is the likelihood ratio of a tempered model), with the
  zero-mean control variate ``1/K``: ``L = -sum_k (omega_k - 1/K) log p(alpha_k | pi)``.

``L`` plus an optional differentiable penalty on the probabilities (expected latency or
FLOPs, see ``penalty.py``) is minimised with Adam on the logits (``arch_lr``).
"""
from __future__ import annotations

import copy
import math
import numpy as np
import torch

from hwnas.errors import SearchError, valid_list
from hwnas.search.base import PenaltyFn, Strategy, register_strategy
from hwnas.search.distribution import CategoricalDistribution
from hwnas.space import Arch, SearchSpace

ESTIMATORS = ("normalised", "importance")


class DistributionStrategy(Strategy):
    """Shared machinery of the distribution strategies (PARSEC, FP-NAS)."""

    is_distribution = True

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8,
                 arch_lr: float = 0.3, estimator: str = "normalised", baseline_decay: float = 0.9,
                 factorized: bool = False):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        if estimator not in ESTIMATORS:
            raise SearchError(f"estimator must be one of {valid_list(ESTIMATORS)}, got {estimator!r}")
        if not (arch_lr > 0 and math.isfinite(arch_lr)):
            raise SearchError(f"arch_lr must be a positive number, got {arch_lr}")
        if not 0.0 <= baseline_decay < 1.0:
            raise SearchError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        self.arch_lr = float(arch_lr)
        self.estimator = estimator
        self.baseline_decay = float(baseline_decay)
        self.dist = CategoricalDistribution(space, factorized=factorized)
        self.optimizer = torch.optim.Adam(self.dist.params, lr=self.arch_lr)
        self._baseline: float | None = None
        self._var = 1.0

    # -- distribution views ------------------------------------------------
    def probs(self) -> list[torch.Tensor]:
        """Differentiable per-decision probability vectors (choices in space order)."""
        return self.dist.probs()

    def entropy(self) -> float:
        return self.dist.entropy()

    @property
    def phase(self) -> str:
        return "factorized" if self.dist.factorized else "joint"

    def ranked(self, k: int) -> list[Arch]:
        return [a for a, _ in self.dist.top_k(k)]

    def log_prob(self, arch: Arch) -> float:
        with torch.no_grad():
            return float(self.dist.log_prob([arch])[0])

    # -- ask / tell ----------------------------------------------------------
    def _propose(self, n: int) -> list[Arch]:
        return self.dist.sample(n, self.rng)

    def _advantages(self, rewards: np.ndarray) -> np.ndarray:
        if self._baseline is None:
            self._baseline = float(rewards.mean())
            self._var = float(rewards.var()) if len(rewards) > 1 else 1.0
        b, s = self._baseline, math.sqrt(max(self._var, 1e-12))
        adv = (rewards - b) / max(s, 1e-6)
        d = self.baseline_decay
        self._baseline = d * b + (1 - d) * float(rewards.mean())
        self._var = d * self._var + (1 - d) * float(((rewards - b) ** 2).mean())
        return adv

    def _update(self, archs: list[Arch], rewards: np.ndarray, penalty: PenaltyFn | None) -> None:
        logp = self.dist.log_prob(archs)
        if self.estimator == "normalised":
            adv = torch.as_tensor(self._advantages(rewards), dtype=torch.float64)
            loss = -(adv * logp).mean()
        else:
            tau = float(rewards.std()) or 1.0
            omega = torch.softmax(torch.as_tensor(rewards / tau, dtype=torch.float64), 0)
            loss = -((omega - 1.0 / len(archs)) * logp).sum()
        if penalty is not None:
            loss = loss + penalty(self.dist.probs())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    # -- persistence ---------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        # deep copy: Optimizer.state_dict() returns references to the live moment tensors
        state.update(dist=self.dist.state_dict(), optimizer=copy.deepcopy(self.optimizer.state_dict()),
                     baseline=self._baseline, var=self._var)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if bool(state["dist"]["factorized"]) != self.dist.factorized:
            self._set_dist(CategoricalDistribution(self.space, factorized=bool(state["dist"]["factorized"])))
        self.dist.load_state_dict(state["dist"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._baseline = state["baseline"]
        self._var = float(state["var"])

    def _set_dist(self, dist: CategoricalDistribution) -> None:
        """Replace the distribution (Adam's moments belong to the old parameters: restart)."""
        self.dist = dist
        self.optimizer = torch.optim.Adam(self.dist.params, lr=self.arch_lr)


@register_strategy("parsec")
class Parsec(DistributionStrategy):
    """PARSEC: joint categorical per decision, a fixed ``K = samples_per_step`` per step."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8,
                 arch_lr: float = 0.3, estimator: str = "normalised", baseline_decay: float = 0.9):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, arch_lr=arch_lr,
                         estimator=estimator, baseline_decay=baseline_decay, factorized=False)

