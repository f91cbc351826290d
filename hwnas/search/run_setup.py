"""Setting a run up: budget, data, strategy and training samplers, every user error first.

Why its own module: all that can be refused is refused here, before any training and, but
for ``config.json``, before any file (the budget even before that); the driver then only runs.
Every rank runs the same setup (``distributed.agree`` fails them together).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.errors import SearchError
from hwnas.search.base import create_strategy, strategy_class
from hwnas.search.config import SearchConfig
from hwnas.search.costs import RunCosts, budget_costs, data_costs
from hwnas.search.curriculum import make_curriculum
from hwnas.search.outputs import write_json
from hwnas.search.train_samplers import SamplerContext, UniformSampler, create_train_sampler

#: offset of the warm-up generator's seed (kept: it fixes which uniform paths a seed trains)
WARM_SEED_OFFSET = 7919


@dataclass
class Run:
    """What the setup of a run produced (the same on every rank)."""

    space: object
    res: int
    cost_res: int | None
    costs: RunCosts
    data: object
    steps_per_epoch: int
    val_batch: int
    strategy: object
    warm_rng: np.random.Generator  # uniform paths of the warm-up (and of the ``uniform`` sampler)
    warm_sampler: object  # UniformSampler on ``warm_rng``
    train_sampler: object  # the configured TrainSampler, bound to the run
    curriculum: object = None  # curriculum.Curriculum of ``class_schedule``; None: every class always


def setup(config: SearchConfig, out: Path | None, world) -> Run:
    """Check the budget, load the data and make the strategy and the samplers; every user error
    is raised here, before any training (and, on rank 0, before any file but ``config.json``)."""
    from hwnas.data import load_dataset
    from hwnas.distributed import check_batch
    from hwnas.space import get_space

    check_batch(config.batch_size, world)
    if config.refine and world.size > 1:  # rank 0 would time and re-pick alone; the ranks must agree
        raise SearchError(f"--refine times candidates in one process; this run has {world.size} ranks: "
                          "search under torchrun without it, then time candidates with 'hwnas export --measured-pick'")
    space = get_space(config.space)
    res = config.resolution or (max(space.resolutions) if space.searchable_resolution else space.default_resolution)
    cost_res = None if space.searchable_resolution else int(res)
    costs = budget_costs(config, space, cost_res)
    if out is not None and world.is_main:  # the budget is sane: from here on the run leaves files
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
    data = load_dataset(config.dataset, int(res), seed=config.seed, limit=config.limit,
                        test_fraction=config.test_fraction)
    curriculum = make_curriculum(config, data.num_classes, data.name)  # its counts against the classes
    data_costs(costs, config, space, cost_res, data.num_classes)
    steps_per_epoch = max(1, len(data.train) // config.batch_size)
    vb = min(config.val_batch_size, len(data.val.tensors[1]))
    strategy = make_strategy(config, space, steps_per_epoch, costs, vb)
    warm_rng = np.random.default_rng(config.seed + WARM_SEED_OFFSET)
    ctx = SamplerContext(config=config, space=space, strategy=strategy, warm_rng=warm_rng,
                         steps_per_epoch=steps_per_epoch, feasible=costs.feasible(),
                         fallback=costs.crange.min_arch if costs.crange is not None else None)
    warm_sampler = UniformSampler().bind(ctx)
    train_sampler = create_train_sampler(config.train_sampler, **config.train_sampler_params).bind(ctx)
    return Run(space, int(res), cost_res, costs, data, steps_per_epoch, vb, strategy, warm_rng, warm_sampler,
               train_sampler, curriculum)


def switch_epoch(config: SearchConfig) -> int:
    """FP-NAS's switch epoch: the configured one, else half of the search epochs."""
    search_epochs = config.epochs - config.warmup_epochs
    return int(config.switch_epoch) if config.switch_epoch is not None else search_epochs // 2


def make_strategy(config: SearchConfig, space, steps_per_epoch: int, costs: RunCosts, val_batch: int):
    """The configured strategy with the settings it takes from the run (``Strategy.run_params``:
    the distributions' ``arch_lr``, FP-NAS's switch step, danas's stage ends, dmasking's
    schedule length); a strategy with a ``feasible`` slot (evolution) gets the budget as a
    predicate."""
    cls = strategy_class(config.strategy)
    sparams = {"seed": config.seed, "samples_per_step": config.samples_per_step,
               **cls.run_params(config, steps_per_epoch), **config.strategy_params}  # the user's last
    strategy = create_strategy(config.strategy, space, **sparams)
    needs_grad = costs.penalty_fn is not None or (config.penalty == "logcost" and costs.budget is not None)
    if needs_grad and not strategy.differentiable:
        raise SearchError(f"the {config.penalty} penalty acts on a distribution's gradient (parsec, fpnas), "
                          f"which {config.strategy!r} has not: use --penalty hinge or mnas")
    if strategy.relaxed and costs.budget is not None and config.penalty != "differentiable":
        raise SearchError(f"{config.strategy!r} learns its gates by gradient and scores no sampled arch: the budget "
                          f"must enter its loss, --penalty differentiable (got --penalty {config.penalty})")
    if config.class_schedule and strategy.relaxed:
        raise SearchError(f"class_schedule masks the logits of the supernet's sampled paths, which "
                          f"{config.strategy!r}'s relaxed forward does not run: drop --class-schedule")
    if hasattr(strategy, "feasible") and costs.cost_fn is not None:
        strategy.feasible = costs.feasible()
    if getattr(strategy, "estimator", None) == "importance":
        if config.reward_kind != "loss":
            raise SearchError("the importance estimator weights archs by their validation log-likelihood: "
                              "it needs reward='loss' (or estimator='reinforce' for accuracy rewards)")
        strategy.likelihood_scale = float(val_batch)  # n * mean log-likelihood = the batch's log-likelihood
    return strategy
