"""Pi-NAS-style (supervised adaptation), after Pi-NAS (Peng et al., "Pi-NAS: Improving Neural
Architecture Search by Reducing Supernet Training Consistency Shift", ICCV 2021): train the
supernet on two paths a batch that differ in every decision, each pulled towards a mean
teacher's prediction on the *other* path, the teacher an EMA of the supernet updated only where
the step's paths read; then search it by evolution under the budget.

Sources: the authors' code [code] (``Ernie1/Pi-NAS @ 203b832``:
``OpenSelfSup/openselfsup/models/pinas.py::PiNAS.forward_train``,
``OpenSelfSup/configs/pinas_learning.py``, ``OpenSelfSup/openselfsup/apis/search_phase.py``),
read through ``../shared/research/seed_strategies.md`` 3.8; the paper itself was not read here,
so its ablations and headline numbers are [paper?] and not measured here.

**What the code does** (MoCo-v2, unsupervised): each step draws two different candidates per
block, without replacement, i.e. two paths that differ in every block; four augmented views;
each path encodes its query view and, with the key encoder, its key view; the positives are
*cross-path* (path 0's query with path 1's key and vice versa) against a queue of negatives
(InfoNCE, temperature 0.2); the key encoder is a "mean teacher", an EMA of the supernet with
momentum 0.999 updated only on the blocks of the sampled path (``ema_blocks(choice_indices)``)
and the head.

**What is built here** (``PiNASSampler``, ``train_sampler='pinas'``): hwnas's datasets are
labelled tensors without augmentations, so this is a *supervised adaptation*, not Pi-NAS:

1. Per training batch after warm-up, two paths from the sampler's own seeded generator
   (replicated on every rank: ``same_paths_on_all_ranks``): path 0 uniform over the space,
   path 1 uniform among the archs that differ from path 0 in every decision with more than one
   choice (per decision, a choice drawn without replacement) [code].  Under a budget (the
   run's ``feasible`` predicate) path 0 is re-drawn until it meets it, then path 1 (given path
   0), at most ``max_tries`` draws each (rejection one path at a time, not of the pair: at a
   tight budget, the 1% FLOPs quantile of ``tiny``, a pair that meets it is ~100x rarer than
   one path); a path not found is the run's cheapest arch (counted in ``stats['fallbacks']``;
   the two paths then need not differ everywhere).
2. The loss of path i on batch (x, y) is
   ``CE(s_i(x), y) + consistency_weight * softCE(s_i(x) / T, softmax(t_j(x) / T))``, with
   ``s`` the supernet, ``t`` the teacher, ``j`` the other path and ``T`` the ``temperature``:
   the labels replace the instance-discrimination task, the other path's teacher prediction
   replaces the cross-path positive key, and there are no negatives, no queue, no projection
   head and one view (the same images for both paths and the teacher).  ``softCE`` is
   AttentiveNAS's ``soft_cross_entropy`` (``KL(p_t || p_s)`` plus the teacher's entropy, a
   constant); no ``T**2`` factor (at the default ``T = 1`` the same).  The loop averages the
   two paths' losses (``train_step``).
3. The teacher is a deep copy of the supernet made when warm-up ends (so it starts as the
   warm-up supernet; the copy is made in ``begin_training``, the loop's one call with the supernet
   at that moment), run under ``torch.no_grad()`` with BN *batch statistics*, as the
   student trains (``Supernet.batch_stats``: its running statistics are neither read nor
   moved).  After each optimizer step, ``t = m t + (1 - m) s`` with ``momentum`` ``m``,
   *only on the entries the step's two paths read*: for each parameter, where its gradient
   (still in place after the step) is non-zero.  This is the code's ``ema_blocks`` at the
   granularity of hwnas's weight sharing (leading channels, kernel centres, shared BN per
   position): a block's weights that the path did not slice keep their teacher value.  An
   entry whose gradient is exactly zero although it was read (e.g. behind a ReLU that is zero
   on the whole batch) is not updated either: the gradient is the only record of what a step
   read.  Under torchrun the gradients are averaged over the ranks first, so every rank's
   teacher stays identical.
4. ``momentum`` defaults to 0.99, not the code's 0.999: hwnas runs train the supernet for
   ~100-300 steps, not 100 ImageNet epochs, and at 0.999 the teacher would hardly leave the
   warm-up supernet (its time constant is 1 / (1 - m) steps of the entries a path reads).
5. The teacher's BN running statistics (buffers) are left as they were at the copy: the
   teacher always normalises with batch statistics, so they are never read, and leaving them
   keeps the teacher's state identical on every rank (each rank's BN sees only its shard).
   Under torchrun the student's BN normalises over every rank's images (``synced_bn``), the
   teacher's over its own rank's shard.

The teacher's tensors are in ``state_dict`` (saved into ``checkpoint.pt``), so a resumed run
ends as an uninterrupted one.  The teacher costs one extra forward (no backward) per path per
step and one copy of the supernet's weights.

Search (``PiNAS``, ``--strategy pinas``): SPOS-style evolution (``evolution.py``) on the frozen
supernet, proposals kept under the budget (the loop's feasibility predicate), population 50 as
GreedyNAS's.  Pi-NAS's own search, a tree search over the space with UCB selection
(``apis/search_phase.py``, ``LearningPhase.ucb_select``, LaNAS-like) scoring candidates by the
contrastive objective after recomputing precise BN statistics, is not built: evolution on the
frozen supernet, scored by the run's reward (``-loss`` by default) with BN batch statistics,
replaces it.  ``--strategy pinas`` is the preset ``train_sampler='pinas'``,
``search_stage_steps=20``; both stay overridable.

Not built [code]: the contrastive objective itself (views, augmentations, negatives queue of
49,152, the 2048-2048-128 MLP neck), the EMA of a head, fp16, the ResNeSt bottleneck space.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from hwnas.errors import SearchError, valid_list
from hwnas.search.attentivenas import soft_cross_entropy
from hwnas.search.base import register_strategy
from hwnas.search.evolution import Evolution
from hwnas.search.train_samplers import Draw, ScoreFn, TrainSampler, register_train_sampler

#: the generator's seed offset (314159: pi)
_SEED = 314_159


@register_train_sampler("pinas")
class PiNASSampler(TrainSampler):
    """Pi-NAS-style (supervised adaptation): two paths differing in every decision, cross-path
    consistency with a path-wise EMA teacher (see the module docstring)."""

    same_paths_on_all_ranks = True

    def __init__(self, *, momentum: float = 0.99, consistency_weight: float = 1.0, temperature: float = 1.0,
                 max_tries: int = 100):
        super().__init__()
        what = "pinas (Pi-NAS-style, supervised adaptation)"
        for name, v in (("momentum", momentum), ("consistency_weight", consistency_weight),
                        ("temperature", temperature), ("max_tries", max_tries)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise SearchError(f"{what} {name} must be a finite number, got {v!r}")
        if not 0.0 <= momentum < 1.0:
            raise SearchError(f"{what} momentum (the teacher's EMA momentum) must be in [0, 1), got {momentum}")
        if consistency_weight < 0:
            raise SearchError(f"{what} consistency_weight must be >= 0, got {consistency_weight}")
        if temperature <= 0:
            raise SearchError(f"{what} temperature must be > 0, got {temperature}")
        if int(max_tries) != max_tries or max_tries < 1:
            raise SearchError(f"{what} max_tries (draws per path under the budget) must be an integer >= 1, "
                              f"got {max_tries}")
        self.momentum, self.consistency_weight = float(momentum), float(consistency_weight)
        self.temperature, self.max_tries = float(temperature), int(max_tries)
        self.stats = {"steps": 0, "tries": 0, "rejected": 0, "fallbacks": 0, "ema_steps": 0}
        self.rng: np.random.Generator | None = None
        self.teacher = None  # the mean teacher (a Supernet), made by ``attach`` when warm-up ends
        self._teacher_state: dict | None = None  # a loaded teacher state waiting for ``attach``
        self._paths: list = []  # the last draw's two paths, in the order ``loss`` sees them
        self._turn = 0  # which of them ``loss`` is called for next
        self._last = None  # the last path drawn (the fallback of a run without a known cheapest arch)

    # -- the run -----------------------------------------------------------------
    def bind(self, ctx) -> "PiNASSampler":
        super().bind(ctx)
        self.rng = np.random.default_rng([int(ctx.config.seed), _SEED])
        return self

    def attach(self, net) -> None:
        """Make the teacher: a deep copy of ``net`` (the warm-up supernet), or of a loaded state."""
        self.teacher = copy.deepcopy(net)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
            p.grad = None
        if self._teacher_state is not None:
            self._load_teacher(self._teacher_state)
            self._teacher_state = None

    def begin_training(self, net) -> None:
        """Called by the loop once when warm-up ends (and on a resume past it, before the
        checkpoint's state is loaded): the teacher is copied here."""
        self.attach(net)

    # -- the protocol ------------------------------------------------------------
    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        self._paths, self._turn = list(self.pair()), 0
        self.stats["steps"] += 1
        return Draw(list(self._paths))

    def pair(self) -> tuple:
        """Two uniform paths that differ in every decision with more than one choice, each meeting
        the budget: path 0 re-drawn until it meets it, then path 1 (given path 0), at most
        ``max_tries`` draws each; a path not found is the run's cheapest arch (or, without one,
        the last draw), counted in ``stats['fallbacks']``."""
        a = self._feasible_draw(self._uniform)
        if a is None:
            self.stats["fallbacks"] += 1
            a = self.ctx.fallback if self.ctx.fallback is not None else self._last
            return a, a
        b = self._feasible_draw(lambda: self._other(a))
        if b is None:
            self.stats["fallbacks"] += 1
            b = self.ctx.fallback if self.ctx.fallback is not None else self._last
        return a, b

    def _feasible_draw(self, gen):
        """``gen()`` until it meets the budget (None after ``max_tries`` rejections)."""
        feasible = self.ctx.feasible
        for _ in range(self.max_tries):
            self._last = x = gen()
            self.stats["tries"] += 1
            if feasible is None or feasible(x):
                return x
            self.stats["rejected"] += 1
        return None

    def _uniform(self):
        return self.ctx.space.from_indices([int(self.rng.integers(len(d.choices))) for d in self.ctx.space.decisions])

    def _other(self, arch):
        """Uniform among the archs that differ from ``arch`` in every decision with more than
        one choice (per decision, a choice drawn without replacement)."""
        space, out = self.ctx.space, []
        for d, i in zip(space.decisions, space.indices(arch)):
            j = i
            if len(d.choices) > 1:
                j = int(self.rng.integers(len(d.choices) - 1))
                j += j >= i
            out.append(j)
        return space.from_indices(out)

    def loss(self, forward, yb, path, *, xb=None):
        """``CE + consistency_weight * softCE`` against the teacher's prediction on the other path."""
        import torch
        import torch.nn.functional as F

        if self._turn >= len(self._paths) or path != self._paths[self._turn]:
            raise SearchError(f"pinas loss expects the paths of its last draw in order "
                              f"({valid_list(self._paths)}); got {path} as path {self._turn}")
        other = self._paths[1 - self._turn] if len(self._paths) == 2 else path
        self._turn += 1
        logits = forward(path)
        ce = F.cross_entropy(logits, yb)
        if self.consistency_weight == 0:
            return ce
        if self.teacher is None:
            raise SearchError("pinas: no teacher (the loop copies it from the supernet when warm-up ends; "
                              "outside the loop call attach(net) first)")
        if xb is None:
            raise SearchError("pinas loss needs the batch's images (xb) for its teacher")
        T = self.temperature
        with torch.no_grad(), self.teacher.batch_stats():
            soft = F.softmax(self.teacher(xb, other).detach() / T, dim=1)
        return ce + self.consistency_weight * soft_cross_entropy(logits / T, soft)

    def after_step(self, net, paths) -> None:
        """The path-wise EMA: ``t = m t + (1 - m) s`` where the step's gradient is non-zero."""
        import torch

        if self.teacher is None:
            return
        m = self.momentum
        teacher = dict(self.teacher.named_parameters())
        with torch.no_grad():
            for name, s in net.named_parameters():
                if s.grad is None:
                    continue
                t = teacher[name]
                t.copy_(torch.where(s.grad != 0, m * t + (1.0 - m) * s.detach(), t))
        self.stats["ema_steps"] += 1

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(rng=self.rng.bit_generator.state, stats=dict(self.stats))
        if self.teacher is not None:
            state["teacher"] = {k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}
        elif self._teacher_state is not None:
            state["teacher"] = self._teacher_state
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self.stats = {k: int(v) for k, v in state["stats"].items()}
        teacher = state.get("teacher")
        if teacher is None:  # saved in warm-up: the teacher is copied when warm-up ends
            self.teacher = self._teacher_state = None
        elif self.teacher is None:
            self._teacher_state = teacher
        else:
            self._load_teacher(teacher)

    def _load_teacher(self, tensors: dict) -> None:
        self.teacher.load_state_dict(tensors)


@register_strategy("pinas")
class PiNAS(Evolution):
    """Evolution on the Pi-NAS-style (supervised adaptation) trained supernet; the preset makes
    ``--strategy pinas`` the whole method.  Population 50 unless given, independent of the
    loop's ``samples_per_step``."""

    preset = {"train_sampler": "pinas", "search_stage_steps": 20}

    def __init__(self, space, *, seed: int = 0, samples_per_step: int = 50, population: int | None = 50, **evolution):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, population=population, **evolution)
