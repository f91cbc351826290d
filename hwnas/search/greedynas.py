"""GreedyNAS (You, Huang, Yang, Wang, Qian & Zhang, "GreedyNAS: Towards Fast One-Shot NAS with
Greedy Supernet", CVPR 2020, arXiv 2003.11236): train the supernet greedily on good paths,
then search it by evolution under the budget.

Sources: the abstract [paper]; MMRazor's ``GreedySamplerTrainLoop``
(``open-mmlab/mmrazor @ 90c7af1 : mmrazor/engine/runner/subnet_sampler_loop.py``) and its
GreedyNAS supernet/search configs [code-3p]; no official code was found
(``../shared/research/seed_strategies.md`` 3.3).  The method section could not be read here;
every choice below that rests on it is marked [paper?].

Training (``GreedySampler``, ``--train-sampler greedy``), per training batch after warm-up:

1. If the survivor queue is empty, refill it by *multi-path sampling with rejection*: draw
   ``candidates`` (m) paths; each is, with probability ``epsilon(t)`` and a non-empty pool, a
   uniform pick from the candidate pool (exploitation), else a uniform path of the space that
   meets the budget (exploration; over-budget draws are rejected and re-drawn, as MMRazor's
   FLOPs check rejects them).  Score them all on one validation batch with the shared weights
   (the loop's ``evaluate``: ``-loss`` by default, or accuracy with ``reward='acc'``; MMRazor
   scores top-1 accuracy on a validation subset, the paper's surrogate set size is [paper?]).
   The ``keep_top`` (k) best survive; the rest are rejected without training.
2. The candidate pool (capacity ``pool_size``, n) takes the survivors with their scores and is
   cut back to the n best.  A pool path that was drawn and re-scored gets its fresh score
   (scores measured with older weights are otherwise kept; MMRazor instead re-validates every
   pool member at each refill, up to 1000 full validations) [paper?].  MMRazor pushes all m
   scored paths into its pool, not only the survivors [paper?].
3. Train the batch on the next survivor (one per batch, as MMRazor; whether the paper trains
   the k survivors on one batch or on k batches is [paper?]).

``epsilon(t)`` rises linearly from ``init_p`` at the share ``start`` of the post-warm-up
training steps to ``max_p`` at the share ``end`` (MMRazor: 0 to 0.8 over iterations 10000 to
144360 of 150k, i.e. 8% to 96%, the fractions used here; MMRazor's formula drops the
``init_p`` offset, harmless at its ``init_p = 0``).  Hyper-parameters scaled to hwnas runs
(the brief's: n = 50, m = 10, k = 5; MMRazor's n is 1000 for 150k iterations).  The
uniform warm-up epochs before greedy training are the loop's; the paper's warm-up is [paper?].

Search (``GreedyNAS``, ``--strategy greedynas``): SPOS-style evolution (``evolution.py``) on
the frozen supernet, proposals kept under the budget (the loop's feasibility predicate), its
first population seeded with the pool's best paths (MMRazor's search config: population 50,
top 10 parents, 25 mutations and 25 crossovers with ``m_prob`` 0.1, 20 generations).
``--strategy greedynas`` is the one-flag preset ``train_sampler='greedy'``,
``search_stage_steps=20``; both stay overridable.

Early stop (``stop_churn``, off by default): the paper stops supernet training once the
candidate pool is stable, the basis of its "~60% of supernet training cost" [paper?: the
method section could not be read; the rule below is ours].  After every refill the sampler
records the pool's *churn*, the share of its members that were not in it before the refill;
once the pool is full and the mean churn of the last ``stop_window`` refills is below
``stop_churn``, the sampler is ``finished``: the loop ends supernet training after that
batch (the epoch's checkpoint is written) and goes on to the search stage.  The training
steps done are in ``stats['stopped_at_step']`` (post-warm-up steps; 0: never stopped).
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import SearchError
from hwnas.search.base import register_strategy
from hwnas.search.evolution import Evolution
from hwnas.search.train_samplers import Draw, ScoreFn, TrainSampler, register_train_sampler


@register_train_sampler("greedy")
class GreedySampler(TrainSampler):
    """Multi-path sampling with rejection and a candidate pool (see the module docstring).

    Its paths are the same on every rank under torchrun: its generator and the gathered scores
    are replicated, so all ranks agree on the survivors without communicating them."""

    same_paths_on_all_ranks = True

    def __init__(self, *, pool_size: int = 50, candidates: int = 10, keep_top: int = 5, init_p: float = 0.0,
                 max_p: float = 0.8, start: float = 0.08, end: float = 0.96, max_tries: int = 100,
                 stop_churn: float | None = None, stop_window: int = 10):
        super().__init__()
        if int(pool_size) < 1:
            raise SearchError(f"greedy pool_size (the candidate pool's capacity n) must be >= 1, got {pool_size}")
        if int(candidates) < 1:
            raise SearchError(f"greedy candidates (paths scored per refill, m) must be >= 1, got {candidates}")
        if not 1 <= int(keep_top) <= int(candidates):
            raise SearchError(f"greedy keep_top (k, the survivors of m={candidates} scored paths) must be in "
                              f"[1, {candidates}], got {keep_top}")
        if not 0.0 <= init_p <= max_p <= 1.0:
            raise SearchError(f"greedy needs 0 <= init_p <= max_p <= 1 (pool-draw probabilities), got "
                              f"init_p={init_p}, max_p={max_p}")
        if not 0.0 <= start < end <= 1.0:
            raise SearchError(f"greedy needs 0 <= start < end <= 1 (shares of the training steps), got "
                              f"start={start}, end={end}")
        if int(max_tries) < 1:
            raise SearchError(f"greedy max_tries must be >= 1, got {max_tries}")
        if stop_churn is not None and not 0.0 < float(stop_churn) <= 1.0:
            raise SearchError(f"greedy stop_churn (the pool's mean share of new members below which training "
                              f"stops) must be in (0, 1], or None for no early stop; got {stop_churn}")
        if int(stop_window) < 1:
            raise SearchError(f"greedy stop_window (refills the churn is averaged over) must be >= 1, got {stop_window}")
        self.stop_churn = None if stop_churn is None else float(stop_churn)
        self.stop_window = int(stop_window)
        self.churn: list[float] = []  # the pool's share of new members after each refill
        self.pool_size, self.candidates, self.keep_top = int(pool_size), int(candidates), int(keep_top)
        self.init_p, self.max_p, self.start, self.end = float(init_p), float(max_p), float(start), float(end)
        self.max_tries = int(max_tries)
        self.pool: dict[str, float] = {}  # arch string -> score, best first
        self.queue: list[str] = []  # survivors not trained yet
        self.stats = {"refills": 0, "pool_draws": 0, "open_draws": 0, "rejected": 0, "stopped_at_step": 0}
        self.rng: np.random.Generator | None = None

    def bind(self, ctx) -> "GreedySampler":
        super().bind(ctx)
        self.rng = np.random.default_rng([int(ctx.config.seed), 2003_11236])
        return self

    def epsilon(self, t: float) -> float:
        """Probability that a candidate comes from the pool, at share ``t`` of the training."""
        if t <= self.start:
            return self.init_p
        if t >= self.end:
            return self.max_p
        return self.init_p + (self.max_p - self.init_p) * (t - self.start) / (self.end - self.start)

    @property
    def stopped_at(self) -> int | None:
        """The step the pool was found full and stable at (the early stop, ``stop_churn``)."""
        return self.stats["stopped_at_step"] or None

    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        if not self.queue:
            self.refill(self.epsilon(self.ctx.progress(epoch, batch)), score)
        recent = self.churn[-self.stop_window:]
        if (self.stop_churn is not None and not self.finished and len(self.pool) == self.pool_size
                and len(recent) == self.stop_window and sum(recent) / len(recent) < self.stop_churn):
            self.stats["stopped_at_step"] = int(round(self.ctx.progress(epoch, batch) * self.ctx.train_steps)) + 1
        return Draw([self.ctx.space.parse(self.queue.pop(0))])

    def refill(self, eps: float, score: ScoreFn) -> None:
        """Sample m candidates, score them, keep the top k as the survivor queue, update the pool."""
        space, cands = self.ctx.space, []
        for _ in range(self.candidates):
            if self.pool and self.rng.random() < eps:
                keys = list(self.pool)
                a = keys[int(self.rng.integers(len(keys)))]
                self.stats["pool_draws"] += 1
            else:
                a = self._explore()
                if self.pool:
                    self.stats["open_draws"] += 1
            if a is not None and a not in cands:
                cands.append(a)
        if not cands:  # every exploration draw was over the budget: its cheapest arch meets it
            cands = [str(self.ctx.fallback)]
        scores = np.asarray(score([space.parse(a) for a in cands]), dtype=np.float64)
        if scores.shape != (len(cands),) or not np.all(np.isfinite(scores)):
            raise SearchError(f"greedy needs one finite score per candidate, got {scores.tolist()} for "
                              f"{len(cands)} candidates (did the supernet diverge? lower --lr)")
        self.archs_scored += len(cands)
        order = np.argsort(-scores, kind="stable")[:self.keep_top]
        self.queue = [cands[i] for i in order]
        fresh = dict(zip(cands, scores.tolist()))
        for a in cands:
            if a in self.pool:
                self.pool[a] = fresh[a]
        for a in self.queue:
            self.pool[a] = fresh[a]
        before = set(self.pool)
        self.pool = dict(sorted(self.pool.items(), key=lambda kv: -kv[1])[:self.pool_size])
        self.churn.append(len(set(self.pool) - before) / len(self.pool))
        self.stats["refills"] += 1

    def _explore(self) -> str | None:
        """A uniform path that meets the budget (None after ``max_tries`` rejections)."""
        feasible = self.ctx.feasible
        for _ in range(self.max_tries):
            a = self.ctx.space.sample(self.rng)
            if feasible is None or feasible(a):
                return str(a)
            self.stats["rejected"] += 1
        return None

    def before_search_stage(self, strategy) -> None:
        """Seed an evolution's first population with the pool's paths, best first."""
        seed = getattr(strategy, "seed_population", None)
        if seed is not None and self.pool:
            seed([self.ctx.space.parse(a) for a in self.pool])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(rng=self.rng.bit_generator.state, pool=[[a, s] for a, s in self.pool.items()],
                     queue=list(self.queue), stats=dict(self.stats), churn=list(self.churn))
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        self.pool = {a: float(s) for a, s in state["pool"]}
        self.queue = list(state["queue"])
        self.stats = {"stopped_at_step": 0, **{k: int(v) for k, v in state["stats"].items()}}
        self.churn = [float(c) for c in state.get("churn", [])]  # a checkpoint from before the early stop has none


@register_strategy("greedynas")
class GreedyNAS(Evolution):
    """Evolution on the greedily trained supernet; the preset makes ``--strategy greedynas`` the
    whole method.  Its population is MMRazor's 50 unless given, independent of the loop's
    ``samples_per_step`` (which the two-stage search does not otherwise use)."""

    preset = {"train_sampler": "greedy", "search_stage_steps": 20}

    def __init__(self, space, *, seed: int = 0, samples_per_step: int = 50, population: int | None = 50, **evolution):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, population=population, **evolution)
