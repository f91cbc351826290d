"""``LoopState``: what one step of a search reads (the run's pieces, this rank's place, the log).

Why a record and not globals or a class with the loop inside: the steps (``train_step``,
``strategy_step``, ``epoch``, ``final``) are plain functions of it, so each is small, testable
on its own (a test builds a state with a bare supernet and calls one step), and the driver
(``loop.run_search``) stays short.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class LoopState:
    """The state one search step reads: the run's pieces, this rank's place, the log."""

    config: object  # SearchConfig
    world: object  # hwnas.distributed.World
    space: object
    net: object  # the supernet (scoring, checkpoints)
    train_net: object  # what a training step calls: the supernet, or its DDP wrapper
    optimizer: object
    strategy: object
    costs: object  # costs.RunCosts
    data: object
    steps_per_epoch: int
    vb: int
    clock: Callable[[], float]
    emit: Callable[[dict], None]
    log_f: object = None
    train_sampler: object = None  # train_samplers.TrainSampler after warm-up; None: cross-entropy, no sampler
    curriculum: object = None  # curriculum.Curriculum (class_schedule); None: every class in every epoch

    def evaluate(self, archs, x, y, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy of each arch on ``(x, y)`` with the shared weights; the ranks
        split the archs between them and gather the results (every rank gets all of them).
        In a class-curriculum epoch the supernet's inactive logits are masked (``curriculum.py``),
        so both are over the active classes only."""
        from hwnas.distributed import all_gather_object
        from hwnas.nn.supernet_train import evaluate_arch

        w = self.world
        mine = [(i, *evaluate_arch(self.net, archs[i], (x, y), batch_size=batch_size))
                for i in range(w.rank, len(archs), w.size)]
        scored = sorted(r for part in all_gather_object(mine, w) for r in part)
        return (np.asarray([r[1] for r in scored], dtype=np.float64),
                np.asarray([r[2] for r in scored], dtype=np.float64))

    def reward_of(self, losses: np.ndarray, accs: np.ndarray, archs=None) -> np.ndarray:
        """The run's raw reward (before the budget's shaping): ``-loss``, accuracy, or BN-NAS's
        indicator of ``archs`` from the supernet's BN weights (``reward='bn'``; no data)."""
        kind = self.config.reward_kind
        if kind == "bn":
            from hwnas.search.bnnas import bn_rewards

            return bn_rewards(self.net, archs)
        return -losses if kind == "loss" else accs

    def archs_sampled(self) -> int:
        """Every arch the search scored: the strategy's asks plus the sampler's own candidates."""
        scored = 0 if self.train_sampler is None else self.train_sampler.archs_scored
        return int(self.strategy.archs_sampled) + int(scored)
