"""AttentiveNAS (Wang, Gong, Li, Chandra & Dubey, "AttentiveNAS: Improving Neural Architecture
Search via Attentive Sampling", CVPR 2021, arXiv 2011.09011): train the supernet with the
sandwich rule, in-place distillation and Pareto-aware (attentive) sampling, then search it by
evolution under the budget.

Sources: the authors' code [code] (``facebookresearch/AttentiveNAS``: ``train_attentive_nas.py``
``train_epoch``, ``sampler/attentive_nas_sampler.py``, ``utils/loss_ops.py``,
``configs/train_attentive_nas_models.yml``), read through ``../shared/research/seed_strategies.md``
3.4; ``utils/loss_ops.py`` was read here.  The paper's method section could not be read: every
choice below resting on it alone is marked [paper?].

Training (``AttentiveSampler``, ``train_sampler='attentive'``), per training batch after warm-up,
the paths are, in this order:

1. the **max** path (the space's most expensive arch by FLOPs, ``hwnas.cost.cost_extremes``):
   it learns from the labels, label-smoothed cross-entropy (``label_smoothing`` 0.1 [code]);
2. ``attentive_paths`` **attentive** paths (the code trains 2, ``num_arch_training: 4``; the
   default here is 1, to keep a step at 3 forward/backward passes on a CPU): for each, a target
   FLOPs bucket ``tau ~ pi(tau)``, ``candidates`` (k = 3, ``num_trials`` [code]) paths from
   ``pi(alpha | tau)``, scored under no gradient, and the best (``pick='bestup'``, the code's
   default) or the worst (``'worstup'``) of them trains;
3. the **min** path (the cheapest by FLOPs): the sandwich rule (BigNAS, Yu et al. 2020).

In-place distillation (``distill=True`` [code]): the max path's logits, detached, are the soft
targets of the other paths, whose loss is the soft cross-entropy ``-sum_c p_max,c log p_c`` of
``KLLossSoft`` at temperature 1 [code] (the KL divergence ``KL(p_max || p)`` plus the teacher's
entropy, a constant: the same gradient).  The loop averages the paths' losses of a step
(``train_step``); the code sums them: the same direction, a step ``1 / len(paths)`` as long
here (raise ``lr`` to match).

``pi(tau)`` and ``pi(alpha | tau)`` [code ``build_trasition_prob_matrix``,
``sample_one_target_flops``]: a table of ``table_size`` uniform archs and their analytic FLOPs
(built at ``bind``, from its own seeded generator, so it needs no checkpoint); ``buckets``
equal-width FLOPs buckets between the space's min and max (the code uses 25 MFLOPs steps over
~200-2000 MFLOPs, ~70 buckets; 40 is the brief's scale).  ``pi(tau)`` is the table's empirical
bucket histogram; ``pi(alpha | tau)`` one categorical per decision per bucket, the choices'
frequencies among the table's archs of that bucket, drawn independently.  A candidate is
re-drawn until its FLOPs fall in bucket ``tau``, at most ``max_tries`` (100 [code]) times,
then accepted anyway (counted in ``stats['off_target']``).  The target is FLOPs whatever the
run's budget (the paper's sampler is FLOPs-conditioned); the budget enters in the search.

Scoring deviates from the code: the code scores the candidates on the current *training*
batch; here they are scored with the sampler protocol's ``score`` (the loop's ``evaluate``)
on the step's *validation* batch, with the same weights and, as in the code (train mode with
``bn_momentum: 0``), BN batch statistics that move no running statistics.  The scores are
``-loss`` (the run's default reward; the code's ``-CE_smooth``) or accuracy with
``reward='acc'``.  Under torchrun the scores are gathered and the generator is replicated, so
every rank trains the same paths (``same_paths_on_all_ranks``: BN normalises over all ranks'
images) and distils from the max path's logits on its own shard.

Search (``AttentiveNAS``, ``--strategy attentivenas``): SPOS-style evolution (``evolution.py``)
on the frozen supernet, proposals kept under the budget (the loop's feasibility predicate),
population 50 as GreedyNAS's.  The paper's search procedure on the trained supernet is
[paper?] (its released code covers training and evaluation).  ``--strategy attentivenas`` is
the preset ``train_sampler='attentive'``, ``search_stage_steps=20``; both stay overridable.

The paper's ablation, BestUp-3 giving a better accuracy-FLOPs front than BigNAS's uniform
sandwich (WorstUp alongside), is [paper?]; ``pick='uniform'`` is that baseline (the middle paths
uniform over the space, unscored), and ``benchmarks/attentive_pareto_bench.py`` compares the
three fronts at hwnas scale.  ``table_size`` (2000) is
this port's choice: the code builds ``pi(alpha | tau)`` from a file of sampled subnets.

Not built [code]: dropout 0.2 and drop-connect 0.2 on the max path, gradient clipping at 1.0,
the warm-up cosine schedule, and the post-training BN calibration (the search here scores with
BN batch statistics, which needs none).
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import SearchError, valid_list
from hwnas.search.base import register_strategy
from hwnas.search.evolution import Evolution
from hwnas.search.train_samplers import Draw, ScoreFn, TrainSampler, register_train_sampler

#: ``uniform``: BigNAS's sandwich (Yu et al. 2020), the middle paths uniform over the space and
#: unscored: the baseline of AttentiveNAS's ablation (``benchmarks/attentive_pareto_bench.py``)
PICKS = ("bestup", "worstup", "uniform")
#: AttentiveNAS's arXiv number: the generators' seed offset
_SEED = 2011_09011


def soft_cross_entropy(logits, soft_targets):
    """``mean_i -sum_c q_ic log softmax(logits)_ic``: AttentiveNAS's ``KLLossSoft`` at ``T = 1``
    (``utils/loss_ops.py`` [code]); ``soft_targets`` are probabilities (the teacher's, detached)."""
    import torch.nn.functional as F

    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@register_train_sampler("attentive")
class AttentiveSampler(TrainSampler):
    """Sandwich rule + attentive BestUp/WorstUp paths at a sampled FLOPs target + in-place
    distillation (see the module docstring)."""

    same_paths_on_all_ranks = True

    def __init__(self, *, pick: str = "bestup", candidates: int = 3, attentive_paths: int = 1, buckets: int = 40,
                 table_size: int = 2000, max_tries: int = 100, distill: bool = True, label_smoothing: float = 0.1):
        super().__init__()
        if pick not in PICKS:
            raise SearchError(f"attentive pick must be one of {valid_list(PICKS)}, got {pick!r}")
        if int(candidates) < 1:
            raise SearchError(f"attentive candidates (k paths scored per attentive path) must be >= 1, "
                              f"got {candidates}")
        if int(attentive_paths) < 0:
            raise SearchError(f"attentive attentive_paths (paths between the max and the min) must be >= 0, "
                              f"got {attentive_paths}")
        if int(buckets) < 1:
            raise SearchError(f"attentive buckets (FLOPs buckets of the target) must be >= 1, got {buckets}")
        if int(table_size) < 1:
            raise SearchError(f"attentive table_size (uniform archs behind pi(alpha|tau)) must be >= 1, "
                              f"got {table_size}")
        if int(max_tries) < 1:
            raise SearchError(f"attentive max_tries must be >= 1, got {max_tries}")
        if not isinstance(distill, bool):
            raise SearchError(f"attentive distill must be true or false, got {distill!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise SearchError(f"attentive label_smoothing must be in [0, 1), got {label_smoothing}")
        self.pick, self.candidates, self.attentive_paths = pick, int(candidates), int(attentive_paths)
        self.buckets, self.table_size, self.max_tries = int(buckets), int(table_size), int(max_tries)
        self.distill, self.label_smoothing = distill, float(label_smoothing)
        self.stats = {"steps": 0, "off_target": 0, "redraws": 0}
        self.rng: np.random.Generator | None = None
        self.max_arch = self.min_arch = None
        self.last_targets: list[int] = []  # the buckets tau of the last draw's attentive paths
        self._paths: list = []  # the last draw's paths, in the order ``loss`` sees them
        self._turn = 0  # which of them ``loss`` is called for next
        self._soft = None  # the max path's detached softmax on this step's batch

    # -- the run ---------------------------------------------------------------
    def bind(self, ctx) -> "AttentiveSampler":
        from hwnas.cost import cost_extremes

        super().bind(ctx)
        space = ctx.space
        self.rng = np.random.default_rng([int(ctx.config.seed), _SEED])
        (_, self.min_arch), (_, self.max_arch) = cost_extremes(space, "flops")
        self._res = None if space.searchable_resolution else ctx.config.resolution
        self.lo, self.hi = self.flops(self.min_arch), self.flops(self.max_arch)  # at the run's resolution
        table_rng = np.random.default_rng([int(ctx.config.seed), _SEED, 1])
        rows = [space.indices(space.sample(table_rng)) for _ in range(self.table_size)]
        ids = np.asarray([self.bucket(space.from_indices(r)) for r in rows])
        rows = np.asarray(rows)
        self.target_p = np.bincount(ids, minlength=self.buckets) / len(ids)  # pi(tau)
        # pi(alpha | tau): per bucket, per decision, the choices' frequencies in the table's archs of the bucket
        self.choice_p = [[np.bincount(rows[ids == b, d], minlength=len(dec.choices)) / max(int((ids == b).sum()), 1)
                          for d, dec in enumerate(space.decisions)] for b in range(self.buckets)]
        return self

    def flops(self, arch) -> float:
        """Analytic FLOPs of ``arch`` at the run's resolution (the class count only shifts every
        arch's FLOPs a little; the buckets are relative to the space's min and max)."""
        from hwnas.cost import arch_cost

        return float(arch_cost(self.ctx.space, arch, self._res).flops)

    def bucket(self, arch) -> int:
        """The FLOPs bucket of ``arch``: ``buckets`` equal widths from the space's min to its max."""
        width = max(self.hi - self.lo, 1) / self.buckets
        return int(min(max((self.flops(arch) - self.lo) // width, 0), self.buckets - 1))

    # -- the protocol ------------------------------------------------------------
    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        attentive, self.last_targets = [], []
        for _ in range(self.attentive_paths):
            if self.pick == "uniform":  # BigNAS's sandwich: no target, no scoring
                attentive.append(self.ctx.space.sample(self.rng))
                continue
            tau = int(self.rng.choice(self.buckets, p=self.target_p))
            cands = [self.sample_near(tau) for _ in range(self.candidates)]
            attentive.append(self.choose(cands, score))
            self.last_targets.append(tau)
        self._paths, self._turn, self._soft = [self.max_arch, *attentive, self.min_arch], 0, None
        self.stats["steps"] += 1
        return Draw(list(self._paths))

    def sample_near(self, tau: int):
        """One arch from ``pi(alpha | tau)``, re-drawn until it falls in bucket ``tau`` (at most
        ``max_tries`` draws, then the last is accepted anyway, as the code does)."""
        space = self.ctx.space
        for t in range(self.max_tries):
            row = [int(self.rng.choice(len(p), p=p)) for p in self.choice_p[tau]]
            arch = space.from_indices(row)
            if self.bucket(arch) == tau:
                self.stats["redraws"] += t
                return arch
        self.stats["redraws"] += self.max_tries - 1
        self.stats["off_target"] += 1
        return arch

    def choose(self, cands: list, score: ScoreFn):
        """BestUp: the candidate of the highest score (lowest loss); WorstUp: the lowest.  Ties go
        to the first drawn."""
        scores = np.asarray(score(cands), dtype=np.float64)
        if scores.shape != (len(cands),) or not np.all(np.isfinite(scores)):
            raise SearchError(f"attentive needs one finite score per candidate, got {scores.tolist()} for "
                              f"{len(cands)} candidates (did the supernet diverge? lower --lr)")
        self.archs_scored += len(cands)
        return cands[int(np.argmax(scores) if self.pick == "bestup" else np.argmin(scores))]

    def loss(self, forward, yb, path, *, xb=None):
        """The max path (first of a step): label-smoothed cross-entropy; its detached softmax is
        kept.  The others: soft cross-entropy against it (with ``distill``), else the same
        cross-entropy as the max path."""
        import torch
        import torch.nn.functional as F

        if self._turn >= len(self._paths) or path != self._paths[self._turn]:
            raise SearchError(f"attentive loss expects the paths of its last draw in order "
                              f"({valid_list(self._paths)}); got {path} as path {self._turn}")
        first = self._turn == 0
        self._turn += 1
        logits = forward(path)
        if first or not self.distill:
            if first and self.distill:
                with torch.no_grad():
                    self._soft = F.softmax(logits.detach(), dim=1)
            return F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing)
        return soft_cross_entropy(logits, self._soft)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(rng=self.rng.bit_generator.state, stats=dict(self.stats))
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self.stats = {k: int(v) for k, v in state["stats"].items()}


@register_strategy("attentivenas")
class AttentiveNAS(Evolution):
    """Evolution on the attentively trained supernet; the preset makes ``--strategy attentivenas``
    the whole method.  Population 50 unless given, independent of the loop's ``samples_per_step``."""

    preset = {"train_sampler": "attentive", "search_stage_steps": 20}

    def __init__(self, space, *, seed: int = 0, samples_per_step: int = 50, population: int | None = 50, **evolution):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, population=population, **evolution)
