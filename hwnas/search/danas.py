"""DA-NAS-style search: PARSEC's distribution, a class curriculum, and pruning of every
decision's choices at the end of each curriculum stage.

After DA-NAS: Data Adapted Pruning (Dai et al., ECCV 2020, arXiv 2003.12563).  Only its
abstract could be read (``../shared/research/seed_strategies.md`` 3.5): it trains the
supernet on a growing set of classes, easy ones first, and prunes the lowest-ranked blocks of
every layer as the training set grows; how classes are ranked, what the architecture
parameters are and how much each stage prunes are *not* verified.  So this is "DA-NAS-style",
and every rule below that is not in the abstract is **ours**:

- **Distribution** (ours): PARSEC's (``parsec.Parsec``: a joint categorical per decision,
  ``K = samples_per_step`` samples a step, the importance-weighted or REINFORCE estimator, Adam
  on the logits).  DA-NAS's architecture parameters are said to be DNAS/ProxylessNAS-style
  per-layer weights; hwnas's are a sampled distribution, not binarised gates.
- **Curriculum** (the loop's, ``curriculum.py``: ``SearchConfig.class_schedule``): danas has
  no preset schedule (the class counts depend on the dataset), so it *requires* one:
  ``--class-schedule 3,6,10`` on digits; a config without one is refused in one line.  It
  runs the coupled search (``train_sampler='strategy'``), where the strategy sees the stages.
- **Pruning** (ours): at the end of each stage but the last (``stage_steps``, the search step
  at which each such stage ends, from the loop: ``curriculum.stage_end_steps``), every
  decision keeps the ``keep`` share (default 0.5) of its alive choices with the highest
  probability, rounded up and never fewer than one (ties by choice index); the others get the
  finite floor logit ``FLOOR`` (-1e4: probability exactly 0, never sampled, entropy NaN-free;
  see ``table.py``) and stay there: the floor is re-applied after every update, so Adam's
  momentum cannot revive them.  Pruning is by probability only (not by the stage's rewards).
- Without stages (``stage_steps=()``, e.g. ask/tell outside the loop) it is PARSEC.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hwnas.errors import SearchError
from hwnas.search.base import PenaltyFn, register_strategy
from hwnas.search.parsec import Parsec
from hwnas.search.table import FLOOR
from hwnas.space import Arch, SearchSpace


@register_strategy("danas")
class DANAS(Parsec):
    """PARSEC + pruning of each decision's choices at the class curriculum's stage ends (DA-NAS-style)."""

    #: the config refuses danas without a class curriculum (``SearchConfig._check_class_schedule``)
    needs_class_schedule = True

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8,
                 arch_lr: float = 0.3, estimator: str = "importance", baseline_decay: float = 0.9,
                 keep: float = 0.5, stage_steps: tuple[int, ...] = ()):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, arch_lr=arch_lr,
                         estimator=estimator, baseline_decay=baseline_decay)
        if not 0.0 < float(keep) <= 1.0:
            raise SearchError(f"danas keep must be a share of the alive choices in (0, 1], got {keep}")
        steps = tuple(int(s) for s in stage_steps)
        if any(s < 1 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
            raise SearchError(f"danas stage_steps must be strictly increasing positive step counts, got {list(steps)}")
        self.keep = float(keep)
        self.stage_steps = steps
        self.alive = [np.ones(len(d.choices), dtype=bool) for d in space.decisions]
        self.pruned_stages = 0  # stage ends already pruned at
        self.prunes: list[list[list[int]]] = []  # per prune, per decision: the choices it removed

    @classmethod
    def run_params(cls, config, steps_per_epoch: int) -> dict:
        """The run's ``arch_lr`` and the strategy steps at which the curriculum's stages end."""
        from hwnas.search.curriculum import stage_end_steps

        return {**super().run_params(config, steps_per_epoch), "stage_steps": stage_end_steps(config, steps_per_epoch)}

    @property
    def phase(self) -> str:
        return f"stage {self.pruned_stages + 1}" if self.stage_steps else "joint"

    def alive_counts(self) -> list[int]:
        return [int(a.sum()) for a in self.alive]

    def _update(self, archs: list[Arch], rewards: np.ndarray, penalty: PenaltyFn | None) -> None:
        super()._update(archs, rewards, penalty)
        self._apply_floor()
        steps_done = self.steps + 1  # ``tell`` counts this step after the update
        while self.pruned_stages < len(self.stage_steps) and steps_done >= self.stage_steps[self.pruned_stages]:
            self.prune()

    def prune(self) -> None:
        """Keep the ``ceil(keep * alive)`` most probable alive choices of every decision (at least one)."""
        removed = []
        for i, p in enumerate(self.dist.probs_numpy()):
            alive = np.flatnonzero(self.alive[i])
            n_keep = max(1, math.ceil(self.keep * len(alive)))
            ranked = alive[np.lexsort((alive, -p[alive]))]  # most probable first, ties by index
            drop = sorted(int(j) for j in ranked[n_keep:])
            self.alive[i][drop] = False
            removed.append(drop)
        self.prunes.append(removed)
        self.pruned_stages += 1
        self._apply_floor()

    def _apply_floor(self) -> None:
        with torch.no_grad():
            for p, a in zip(self.dist.params, self.alive):
                if not a.all():
                    p[torch.as_tensor(~a)] = FLOOR

    # -- persistence ---------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(alive=[a.tolist() for a in self.alive], pruned_stages=self.pruned_stages,
                     prunes=[[list(d) for d in p] for p in self.prunes])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.alive = [np.asarray(a, dtype=bool) for a in state["alive"]]
        self.pruned_stages = int(state["pruned_stages"])
        self.prunes = [[list(map(int, d)) for d in p] for p in state["prunes"]]
        self._apply_floor()
