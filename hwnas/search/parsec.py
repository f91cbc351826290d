"""PARSEC: Probabilistic neural ARchitecture SEarCh (Casale, Gordon & Fusi, 2019).

PARSEC learns a distribution ``p(alpha | pi)`` over architectures (an independent
categorical per decision, Sec. 3) by empirical Bayes: maximise the marginal likelihood
``log E_{alpha ~ p(alpha|pi)} p(y | X, v, alpha)``.  Its Monte Carlo gradient with ``K``
samples (their eq. for the importance-weighted estimator) is

    grad_pi  ~=  sum_k  omega_k * grad_pi log p(alpha_k | pi),
    omega_k   =  p(y | X, v, alpha_k) / sum_j p(y | X, v, alpha_j)

i.e. self-normalised importance weights of the ``K`` sampled architectures, computed on
held-out data.  Every step draws a *fixed* ``K`` (``samples_per_step``).

What we implement (``_update``), with the estimator named as what it is:

- ``estimator="importance"`` (default; PARSEC's): ``omega = softmax(n * r)``, where ``r_k``
  is the arch's mean validation log-likelihood on the step's batch (``-cross-entropy``, as
  the loop computes it with ``reward="loss"``, shaped by a budget penalty if one is set) and
  ``n`` the number of validation examples (``likelihood_scale``, set by the loop), so
  ``n * r_k = log p(y | X, v, alpha_k)`` and ``omega`` are exactly the self-normalised
  likelihood weights above.  Surrogate: ``L = -sum_k omega_k log p(alpha_k | pi)``.  With
  ``K = 1`` (FP-NAS's adaptive ``K`` at low entropy) ``omega = 1`` and the step only
  reinforces its sample: that is the estimator's behaviour, not a bug we hide.
- ``estimator="reinforce"`` (hwnas's earlier default, kept as an option and named for what
  it is): REINFORCE (Williams 1992) with a moving baseline, ``A_k = (r_k - b) / s``, ``b``
  and ``s^2`` exponential moving averages (decay ``baseline_decay``) of the reward mean and
  variance, ``L = -(1/K) sum_k A_k log p(alpha_k | pi)``: scale-free across reward types.

The weights' gradient of PARSEC (``sum_k omega_k grad_v log p(y | X, v, alpha_k)`` on the
training batch) is the loop's business: ``SearchConfig.weight_estimator="importance"``.

``L`` plus an optional penalty on the distribution (the differentiable expected-cost
penalty, or FP-NAS's ``beta log C``: see ``penalty.py``) is minimised with Adam on the
logits (``arch_lr``).  The optimiser is not given in the sources we could read
(``../shared/research/fpnas_fidelity.md``, deviation 6): Adam is our choice.
"""
from __future__ import annotations

import copy
import math
import numpy as np
import torch

from hwnas.errors import SearchError, valid_list
from hwnas.search.base import DistributionViews, PenaltyFn, Strategy, register_strategy
from hwnas.search.distribution import CategoricalDistribution
from hwnas.space import Arch, SearchSpace

ESTIMATORS = ("importance", "reinforce")
_ALIASES = {"normalised": "reinforce"}  # the earlier name of the REINFORCE estimator


class DistributionStrategy(DistributionViews, Strategy):
    """Shared machinery of the distribution strategies (PARSEC, FP-NAS)."""

    differentiable = True

    @classmethod
    def run_params(cls, config, steps_per_epoch: int) -> dict:
        return {"arch_lr": config.arch_lr}

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8,
                 arch_lr: float = 0.3, estimator: str = "importance", baseline_decay: float = 0.9,
                 factorized: bool = False):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        estimator = _ALIASES.get(estimator, estimator)
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
        #: examples behind each reward: ``n * r`` is a log-likelihood (the loop sets it)
        self.likelihood_scale = 1.0

    @property
    def phase(self) -> str:
        return "factorized" if self.dist.factorized else "joint"

    # -- ask / tell ----------------------------------------------------------
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

    def importance_weights(self, rewards: np.ndarray) -> np.ndarray:
        """PARSEC's self-normalised weights ``softmax(n * r)`` of one step's samples."""
        z = self.likelihood_scale * np.asarray(rewards, dtype=np.float64)
        w = np.exp(z - z.max())
        return w / w.sum()

    def _update(self, archs: list[Arch], rewards: np.ndarray, penalty: PenaltyFn | None) -> None:
        logp = self.dist.log_prob(archs)
        if self.estimator == "reinforce":
            adv = torch.as_tensor(self._advantages(rewards), dtype=torch.float64)
            loss = -(adv * logp).mean()
        else:
            omega = torch.as_tensor(self.importance_weights(rewards), dtype=torch.float64)
            loss = -(omega * logp).sum()
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
                 arch_lr: float = 0.3, estimator: str = "importance", baseline_decay: float = 0.9):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, arch_lr=arch_lr,
                         estimator=estimator, baseline_decay=baseline_decay, factorized=False)

