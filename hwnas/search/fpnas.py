"""FP-NAS: Fast Probabilistic NAS (Yan, Dai, Zhang, Tian, Wu & Feiszli, CVPR 2021).

FP-NAS is PARSEC (``parsec.py``: the same importance-weighted estimator, by default) with
two changes.  What follows is checked against the sources of
``../shared/research/fpnas_fidelity.md`` (the paper's full text was not available; its
equations come from a re-typed reading note, S2 there), item by item:

1. **Entropy-adaptive sampling** (Sec. 3.2, S2: ``K = lambda * H(P(A | alpha))``; Sec. 5.2.1:
   ``lambda = 1/4`` gives 14 samples at the start on FBNetV2-F).  We use

       K_t = max(k_min, round(lambda * H_t)),   H_t = sum_i H(P_i) in nats,

   with one constant ``lambda`` (default 1/4) for every space, so ``K`` adapts to the space
   size (Sec. 5.2.2).  *Not in the sources:* the rounding (we round half to even, Python's
   ``round``) and a floor; we floor at ``k_min = 1`` (one sample is the fewest a step can
   use) and cap at ``k_max`` only when one is given (default: no cap).  On ``tiny`` the
   uniform start has ``H_0 = 19.2`` nats, so ``K_0 = 5``; on ``fbnetv2``, ``H_0 = 94.6``
   and ``K_0 = 24``.
2. **Coarse-to-fine** (Sec. 3.3, S2): start with the *factorized* distribution
   ``P_i(c) = prod_{(d, v) in dims(c)} softmax(phi_{i,d})[v]`` and switch to the joint
   per-choice categorical "after a certain number of epochs" (Sec. 5.3 ablates that epoch,
   so it is a fixed hyper-parameter, not an entropy rule).  ``switch_step`` is set by the
   loop from ``SearchConfig.switch_epoch``; *not in the sources:* its default, half of the
   search epochs (our stated choice).  The joint starts at ``theta_i(c) = log P_i(c)``, so
   the distribution is unchanged at the switch (the sources say the factorized
   distribution is "converted"; the formula is our reading).  Adam restarts at the switch
   (its moments belong to the factor parameters).  The factorized start is uniform over
   choices, the joint start's distribution (``distribution.py``), so FP-NAS and PARSEC start
   from the same place.  ``switch_entropy`` (off by default) keeps hwnas's earlier extra
   rule, switching as soon as ``H_t < switch_entropy * H_0``, as an option.
3. **Cost term** (Sec. 3.4, S2: ``L = -log P(y | X, w, alpha) + beta log C(alpha)``,
   ``C(alpha) ~ (1/K) sum_k max(0, FLOPs(A_k) / TAR - 1)``): ``--penalty logcost`` in
   ``penalty.py``, on FLOPs or predicted latency.  The hinge and MnasNet reward shapings
   stay available.

Everything else (rewards, Adam on logits, the optional differentiable penalty) is PARSEC's.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from hwnas.errors import SearchError
from hwnas.search.base import PenaltyFn, register_strategy
from hwnas.search.parsec import DistributionStrategy
from hwnas.space import Arch, SearchSpace

log = logging.getLogger(__name__)


@register_strategy("fpnas")
class FPNAS(DistributionStrategy):
    """PARSEC + entropy-adaptive ``K`` + factorized-to-joint coarse-to-fine search."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8,
                 arch_lr: float = 0.3, estimator: str = "importance", baseline_decay: float = 0.9,
                 lam: float = 0.25, k_min: int = 1, k_max: int | None = None,
                 factorized: bool = True, switch_step: int | None = None,
                 switch_entropy: float = 0.0):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, arch_lr=arch_lr,
                         estimator=estimator, baseline_decay=baseline_decay, factorized=factorized)
        self.h0 = self.dist.entropy()  # entropy of the starting distribution
        self.k_max = None if k_max is None else int(k_max)
        self.k_min = int(k_min)
        if self.k_min < 1 or (self.k_max is not None and self.k_max < self.k_min):
            raise SearchError(f"need 1 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
        if not (lam > 0 and math.isfinite(lam)):
            raise SearchError(f"lam must be a positive number, got {lam}")
        self.lam = float(lam)
        if switch_step is not None and int(switch_step) < 0:
            raise SearchError(f"switch_step must be >= 0, got {switch_step}")
        self.switch_step = None if switch_step is None else int(switch_step)
        if not 0.0 <= switch_entropy <= 1.0:
            raise SearchError(f"switch_entropy must be a fraction of the starting entropy in [0, 1], got {switch_entropy}")
        self.switch_entropy = float(switch_entropy)
        self.switched_at: int | None = None

    @classmethod
    def run_params(cls, config, steps_per_epoch: int) -> dict:
        """The run's ``arch_lr`` and its switch step (``SearchConfig.switch_epoch`` in steps)."""
        from hwnas.search.run_setup import switch_epoch

        return {**super().run_params(config, steps_per_epoch), "switch_step": steps_per_epoch * switch_epoch(config)}

    def num_samples(self) -> int:
        """``K_t = max(k_min, round(lambda * H_t))`` (capped at ``k_max`` when given)."""
        k = max(self.k_min, int(round(self.lam * self.entropy())))
        return k if self.k_max is None else min(self.k_max, k)

    def _update(self, archs: list[Arch], rewards: np.ndarray, penalty: PenaltyFn | None) -> None:
        super()._update(archs, rewards, penalty)
        if self.dist.factorized and self._should_switch(self.steps + 1):
            self.switch_to_joint(self.steps + 1)

    def _should_switch(self, steps_done: int) -> bool:
        if self.switch_step is not None and steps_done >= self.switch_step:
            return True
        return self.switch_entropy > 0 and self.entropy() < self.switch_entropy * self.h0

    def switch_to_joint(self, at_step: int | None = None) -> None:
        """Coarse -> fine: joint logits ``theta_i = log P_i`` from the product of the factors."""
        if not self.dist.factorized:
            return
        n_before = self.dist.num_params()
        self._set_dist(self.dist.to_joint())
        self.switched_at = self.steps if at_step is None else at_step
        log.info("fpnas: factorized (%d params) -> joint (%d params) at step %s, entropy %.3f",
                 n_before, self.dist.num_params(), self.switched_at, self.entropy())

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["switched_at"] = self.switched_at
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.switched_at = state.get("switched_at")
