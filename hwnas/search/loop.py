"""The search loop: warm up a weight-sharing supernet, then learn an architecture distribution.

Protocol (PARSEC, Casale et al. 2019, Alg. 1; FP-NAS, Yan et al. 2021, Sec. 3):

1. **Warm-up** (``warmup_epochs``): train the supernet with paths drawn uniformly
   (single-path one-shot, Guo et al. 2020), so that no choice is favoured before the
   distribution starts learning.
2. **Search** (the remaining epochs), one step per training batch:
   - ``archs = strategy.ask()`` (``K`` archs: fixed for PARSEC/random, entropy-adaptive
     for FP-NAS);
   - **supernet step** on the training batch with the first ``train_paths`` of them
     (they are samples of the current distribution, so the plain mean of their losses is
     an unbiased estimate of ``E_alpha[loss]``; weights follow the distribution as in
     PARSEC; ``weight_estimator="importance"`` weights them as PARSEC does).  ``train_paths=0`` trains all ``K`` paths, as PARSEC's weight gradient does
     (cost per step then grows with ``K``, which is what FP-NAS's adaptive ``K`` saves);
     the default 1 keeps a step's training cost independent of ``K``;
   - **rewards** of all ``K`` archs on one validation batch with the shared weights
     (``-loss`` or accuracy; BN uses the batch's statistics, see ``hwnas.nn.supernet``),
     shaped by the budget penalty (``penalty.py``), then ``strategy.tell``.
3. **Final arch**: ``penalty.select_final`` (most likely arch meeting the budget), its
   supernet validation accuracy, predicted latency, FLOPs, params and budget margin.

``archs_sampled`` counts every arch the strategy handed out in the search phase (the
FP-NAS vs PARSEC cost metric; warm-up paths are not counted, they are the same for all).

Outputs in ``out`` (``runs/NAME``): ``config.json``, ``log.jsonl`` (one line per search
step), ``checkpoint.pt`` after every epoch (supernet, its optimizer, strategy state, RNG
states, counters, elapsed time), ``result.json``, ``supernet.pt`` and ``search.png``.
The supernet's learning rate is constant (SGD, Nesterov momentum): a schedule over the
total epochs would change the past when ``--resume`` extends a run with more epochs.
(FP-NAS's default switch epoch is half of the search epochs of the *current* ``epochs``, so
extending a run that has not switched yet moves its switch point; a given ``switch_epoch``
does not move.)
``resume=True`` continues from the checkpoint's epoch (the log is cut back to the
checkpoint's last step, so no step appears twice); data order depends only on
``(seed, epoch)``, so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hwnas import jsonutil
from hwnas.errors import SearchError, valid_list
from hwnas.search import pareto
from hwnas.search import penalty as pen
from hwnas.search.base import create_strategy

log = logging.getLogger(__name__)

REWARDS = ("loss", "acc")
WEIGHT_ESTIMATORS = ("mean", "importance")
TRAIN_SAMPLERS = ("strategy", "uniform")
#: strategies whose papers rank by validation accuracy (their rules assume a reward in [0, 1])
ACC_REWARD_STRATEGIES = ("ddpnas", "mdenas")
# fields that may change between a run and its --resume
_RESUMABLE = {"epochs", "resume", "out", "threads", "force", "device", "grad_sync"}
#: under torchrun, which paths rank r > 0 trains: its own draws, or rank 0's (see ``_rank_paths``)
RANK_PATHS = ("own", "shared")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run depends on (saved as ``config.json`` beside its results)."""

    space: str = "tiny"
    strategy: str = "fpnas"
    dataset: str = "digits"
    epochs: int = 4  # total, warm-up included
    warmup_epochs: int = 1
    seed: int = 0
    out: str | None = None
    latency_budget_ms: float | None = None
    flops_budget: float | None = None
    # more budgets of the same kind: one pick each from the Pareto front of the one supernet
    # (the search itself is steered by the run's budget, the tightest of them from the CLI)
    budgets: tuple[float, ...] = ()
    # latency budgets as a tail: the arch's q-quantile of predicted latency (the predictor's
    # out-of-fold residuals) must meet the budget; None: its median prediction
    budget_quantile: float | None = None
    penalty: str = "hinge"
    penalty_weight: float = 2.0
    mnas_w: float = -0.07
    predictor: str | None = None
    force: bool = False
    reward: str | None = None  # "loss" (-val loss) or "acc"; None: "acc" for ddpnas/mdenas (their papers'), else "loss"
    samples_per_step: int = 8
    train_paths: int = 1  # sampled paths per supernet step; 0: all K (PARSEC's weight gradient)
    batch_size: int = 64
    val_batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    # Adam on the logits.  0.3 was chosen in an earlier benchmark on FP-NAS's own headline metric
    # (0.1 gave 44% fewer archs than PARSEC, 0.3 ~60%: benchmarks/results/search_long.md,
    # search.md); benchmarks/search_bench.py now reports the lr it ran with beside every claim.
    arch_lr: float = 0.3
    # fpnas: search epochs in the factorized phase before the switch to the joint distribution
    # (FP-NAS Sec. 5.3 ablates this epoch); None: half of the search epochs, rounded down
    switch_epoch: int | None = None
    # who picks the paths the supernet trains on after warm-up: "strategy" (its samples: the
    # coupled search of PARSEC / FP-NAS) or "uniform" (single-path one-shot, SPOS: the strategy
    # learns only in the search stage, on the trained, frozen supernet)
    train_sampler: str = "strategy"
    # ask/tell rounds on the frozen supernet after the last epoch (0: none): the two-stage search
    # of SPOS / GreedyNAS / BN-NAS, e.g. --strategy evolution --train-sampler uniform
    search_stage_steps: int = 0
    # the supernet's gradient over the training paths: "mean" (plain average), or "importance"
    # (PARSEC: weights softmax(log-likelihood of the batch) per path; needs train_paths=0)
    weight_estimator: str = "mean"
    limit: int | None = None
    # hold out this share of a dataset without a test split (digits) as a test set the search
    # never sees (``hwnas.data.load_dataset``); ``hwnas export`` of the run holds out the same
    test_fraction: float = 0.0
    resolution: int | None = None
    strategy_params: dict = field(default_factory=dict)
    threads: int | None = 1  # torch CPU threads; None: torch's default (see run_search)
    resume: bool = False
    # "cpu" or "cuda" (under torchrun: cuda:LOCAL_RANK, one GPU per rank, NCCL)
    device: str = "cpu"
    # data-parallel runs (torchrun, ``hwnas.distributed``): "own": every rank trains its own
    # paths, drawn from the same distribution (N ranks train N times the paths a step);
    # "shared": every rank trains rank 0's paths (exactly one process with N times the batch)
    rank_paths: str = "own"
    # how the ranks' gradients are averaged: "ddp" (DistributedDataParallel,
    # find_unused_parameters) or "allreduce" (one flat all-reduce after the backward)
    grad_sync: str = "ddp"

    def __post_init__(self):
        if self.epochs < 1 or self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise SearchError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got epochs={self.epochs}, "
                              f"warmup_epochs={self.warmup_epochs}")
        if self.penalty not in pen.PENALTIES:
            raise SearchError(f"penalty must be one of {valid_list(pen.PENALTIES)}, got {self.penalty!r}")
        if self.reward is not None and self.reward not in REWARDS:
            raise SearchError(f"reward must be one of {valid_list(REWARDS)}, got {self.reward!r}")
        if self.latency_budget_ms is not None and self.flops_budget is not None:
            raise SearchError("give one budget: --latency-budget or --flops-budget, not both")
        if self.latency_budget_ms is not None and not self.predictor:
            raise SearchError("a latency budget needs a latency predictor (--predictor pred.hwp); "
                              "train one with `hwnas predictor train`")
        if int(self.train_paths) < 0:
            raise SearchError(f"train_paths must be >= 0 (0: all sampled paths), got {self.train_paths}")
        for name in ("batch_size", "val_batch_size", "samples_per_step"):
            if int(getattr(self, name)) < 1:
                raise SearchError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.penalty_weight < 0 or not math.isfinite(self.penalty_weight):
            raise SearchError(f"penalty_weight must be >= 0, got {self.penalty_weight}")
        if self.switch_epoch is not None and not 0 <= int(self.switch_epoch) <= self.epochs - self.warmup_epochs:
            raise SearchError(f"switch_epoch must be in [0, {self.epochs - self.warmup_epochs}] (the search epochs), "
                              f"got {self.switch_epoch}")
        if self.budgets and self.latency_budget_ms is None and self.flops_budget is None:
            raise SearchError("budgets give extra picks of the run's budget kind: set latency_budget_ms or flops_budget")
        if any(not (float(b) > 0 and math.isfinite(float(b))) for b in self.budgets):
            raise SearchError(f"budgets must be positive numbers, got {list(self.budgets)}")
        if self.budget_quantile is not None:
            if self.latency_budget_ms is None:
                raise SearchError("budget_quantile applies to a latency budget (it uses the predictor's uncertainty)")
            if not 0.0 < float(self.budget_quantile) < 1.0:
                raise SearchError(f"budget_quantile must be in (0, 1), e.g. 0.9, got {self.budget_quantile}")
        if self.train_sampler not in TRAIN_SAMPLERS:
            raise SearchError(f"train_sampler must be one of {valid_list(TRAIN_SAMPLERS)}, got {self.train_sampler!r}")
        if int(self.search_stage_steps) < 0:
            raise SearchError(f"search_stage_steps must be >= 0, got {self.search_stage_steps}")
        if self.train_sampler == "uniform" and int(self.search_stage_steps) == 0:
            raise SearchError("train_sampler='uniform' trains the supernet without asking the strategy: give "
                              "search_stage_steps > 0 for the strategy to search the trained supernet")
        if self.weight_estimator not in WEIGHT_ESTIMATORS:
            raise SearchError(f"weight_estimator must be one of {valid_list(WEIGHT_ESTIMATORS)}, "
                              f"got {self.weight_estimator!r}")
        if self.weight_estimator == "importance" and int(self.train_paths) != 0:
            raise SearchError("weight_estimator='importance' weights every sampled path: it needs train_paths=0")
        if self.device != "cpu" and self.device != "cuda" and not str(self.device).startswith("cuda:"):
            raise SearchError(f"device must be cpu or cuda (cuda:N), got {self.device!r}")
        if self.rank_paths not in RANK_PATHS:
            raise SearchError(f"rank_paths must be one of {valid_list(RANK_PATHS)}, got {self.rank_paths!r}")
        from hwnas.distributed import GRAD_SYNCS

        if self.grad_sync not in GRAD_SYNCS:
            raise SearchError(f"grad_sync must be one of {valid_list(GRAD_SYNCS)}, got {self.grad_sync!r}")

    @property
    def reward_kind(self) -> str:
        if self.reward is not None:
            return self.reward
        return "acc" if self.strategy in ACC_REWARD_STRATEGIES else "loss"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchResult:
    """What a search found; ``to_dict()`` is ``result.json``."""

    space: str
    arch: str
    resolution: int
    strategy: str
    seed: int
    dataset: str
    predictor: str | None
    latency_budget_ms: float | None
    flops_budget: float | None
    penalty: str
    predicted_latency_ms: float | None
    flops: int
    params: int
    supernet_val_acc: float
    supernet_val_loss: float
    archs_sampled: int
    search_steps: int
    epochs: int
    wall_time_s: float
    budget_margin: float | None
    final_choice: str  # how the final arch was picked (see penalty.select_final)
    final_log_prob: float | None
    entropy: float | None
    switched_at: int | None
    out: str | None
    # one pick per budget (the run's and ``budgets``) from the Pareto front: budget, arch, cost, acc
    per_budget: list | None = None
    pareto_front: int | None = None  # archs on the front (pareto.json)
    budget_quantile: float | None = None
    world_size: int = 1  # ranks that trained the supernet (torchrun); 1: one process

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- helpers ---------------------------------------------------------------------
def _load_predictor(config: SearchConfig, space):
    if not config.predictor:
        return None
    from hwnas.predictors import load_predictor
    from hwnas.profiling.protocol import check_predictor_device

    predictor = load_predictor(config.predictor, space=space, force=config.force)
    # another machine, or this one changed since the predictor's data: say so before searching
    check_predictor_device(predictor.fingerprint)
    return predictor


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(jsonutil.dumps(obj, indent=2))
    tmp.replace(path)


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after ``last_step`` (steps of an epoch that was interrupted)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if rec.get("step", 0) <= last_step:
            keep.append(line)
    path.write_text("".join(s + "\n" for s in keep))


def read_log(path: str | Path) -> list[dict]:
    """The per-step records of a run's ``log.jsonl``."""
    return [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]


def plot_log(records: list[dict], path: str | Path, title: str = "") -> None:
    """Entropy, expected cost and sampled-arch accuracy per step (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    series = [("entropy", "entropy (nats)"), ("expected_cost", "expected cost"), ("acc", "val acc (sampled)")]
    for ax, (key, label) in zip(axes, series):
        ys = [r.get(key) for r in records]
        if any(v is not None for v in ys):
            ax.plot(steps, [np.nan if v is None else v for v in ys])
        if key == "expected_cost" and all(v is None for v in ys):  # no expected cost: sample mean
            ys = [r.get("mean_cost") for r in records]
            if any(v is not None for v in ys):
                ax.plot(steps, [np.nan if v is None else v for v in ys])
        if key == "expected_cost" and records and records[-1].get("budget") is not None:
            ax.axhline(records[-1]["budget"], color="r", ls="--", lw=1, label="budget")
            ax.legend(loc="best")
        if key == "expected_cost" and records:
            label = f"expected {records[-1].get('cost_kind', 'cost')}"
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("search step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the loop ------------------------------------------------------------------------
@dataclass
class _Costs:
    """The budget of one run and the cost callables derived from it (see ``penalty.py``)."""

    predictor: object | None
    budget: pen.Budget | None
    cost_fn: pen.CostFn | None  # the budget's cost, per arch
    crange: pen.CostRange | None  # from ``budget_check``; its cheapest arch is the final fallback
    lat_fn: pen.CostFn | None = None  # predicted latency, logged and reported whenever a predictor is given
    expected_fn: Callable | None = None  # probs -> expected cost (logged; the differentiable penalty's term)
    penalty_fn: Callable | None = None  # the differentiable penalty, passed to ``strategy.tell``

    @property
    def limit(self) -> float | None:
        return None if self.budget is None else self.budget.limit


def run_search(config: SearchConfig, progress: Callable[[dict], None] | None = None) -> SearchResult:
    """Run (or resume) one search; see the module docstring.

    torch runs with ``config.threads`` threads (one by default: the supernet's small per-path
    convs ran 5x slower with two on a loaded 2-vCPU machine) and gets its setting back after.
    Under ``torchrun`` every rank calls this; they join one process group (``hwnas.distributed``)
    and return the same result, and only rank 0 writes files or calls ``progress``."""
    from hwnas.distributed import process_group
    from hwnas.torch_threads import torch_threads

    with torch_threads(config.threads), process_group(config.device) as world:
        return _run_search(config, progress if world.is_main else None, world)


@dataclass
class _Run:
    """What the setup of a run produced (the same on every rank)."""

    space: object
    res: int
    cost_res: int | None
    costs: "_Costs"
    data: object
    steps_per_epoch: int
    val_batch: int
    strategy: object


def _setup(config: SearchConfig, out: Path | None, world) -> _Run:
    """Check the budget, load the data and make the strategy; every user error is raised here,
    before any training (and, on rank 0, before any file but ``config.json``)."""
    from hwnas.data import load_dataset
    from hwnas.space import get_space

    if config.batch_size % world.size:
        lower = config.batch_size // world.size * world.size
        near = ", ".join(str(m) for m in (lower, lower + world.size) if m > 0)
        raise SearchError(f"batch_size={config.batch_size} is one step's batch over all {world.size} ranks and must "
                          f"be a multiple of the world size; valid nearby: {near}")
    space = get_space(config.space)
    res = config.resolution or (max(space.resolutions) if space.searchable_resolution else space.default_resolution)
    cost_res = None if space.searchable_resolution else int(res)
    costs = _budget_costs(config, space, cost_res)
    if out is not None and world.is_main:  # the budget is sane: from here on the run leaves files
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", config.to_dict())
    data = load_dataset(config.dataset, int(res), seed=config.seed, limit=config.limit,
                        test_fraction=config.test_fraction)
    _data_costs(costs, config, space, cost_res, data.num_classes)
    steps_per_epoch = max(1, len(data.train) // config.batch_size)
    vb = min(config.val_batch_size, len(data.val.tensors[1]))
    strategy = _make_strategy(config, space, steps_per_epoch, costs, vb)
    return _Run(space, int(res), cost_res, costs, data, steps_per_epoch, vb, strategy)


def _run_search(config: SearchConfig, progress: Callable[[dict], None] | None, world) -> SearchResult:
    import torch

    from hwnas.distributed import (agree, broadcast_buffers, broadcast_object, check_identical, rank_device,
                                   wrap_for_training)
    from hwnas.nn.supernet import Supernet

    out = Path(config.out) if config.out else None
    # rank 0 reads the checkpoint and hands it to the others (nodes need not share a disk)
    checkpoint = agree(world, lambda: _open_run(config, out), main_only=True)
    run = agree(world, lambda: _setup(config, out, world))
    space, costs, data, strategy = run.space, run.costs, run.data, run.strategy
    steps_per_epoch, vb = run.steps_per_epoch, run.val_batch

    # -- supernet, optimizer ----------------------------------------------------------
    device = rank_device(config.device, world)
    net = Supernet(space, data.num_classes, run.res, seed=config.seed).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    warm_rng = np.random.default_rng(config.seed + 7919)
    start_epoch, step, elapsed = 0, 0, 0.0
    if checkpoint is not None:
        net.load_state_dict(checkpoint["supernet"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        strategy.load_state_dict(checkpoint["strategy"])
        warm_rng.bit_generator.state = checkpoint["warm_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        start_epoch, step, elapsed = checkpoint["epoch"], checkpoint["step"], checkpoint["elapsed_s"]
        if world.is_main:
            _truncate_log(out / "log.jsonl", step)
            log.info("resuming %s at epoch %d (step %d; written by %d rank(s), now %d)", out, start_epoch, step,
                     checkpoint.get("world_size", 1), world.size)
    elif out is not None and world.is_main and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    train_net = wrap_for_training(net, world, config.grad_sync, device)

    t_start = time.perf_counter()

    def clock() -> float:  # run time, the checkpoint's share included
        return elapsed + time.perf_counter() - t_start

    def emit(event: dict) -> None:
        if progress is not None:
            progress(event)

    loop = _Loop(config, world, space, net, train_net, optimizer, strategy, costs, data, steps_per_epoch, vb,
                 clock, emit)
    loop.log_f = open(out / "log.jsonl", "a") if out is not None and world.is_main else None
    try:
        for epoch in range(start_epoch, config.epochs):
            step = _search_epoch(loop, warm_rng, epoch, step)
            broadcast_buffers(net, world)  # BN running statistics: rank 0's, before they are saved
            check_identical(strategy.state_dict(), world, "distribution states")
            if out is not None and world.is_main:
                ckpt_path = out / "checkpoint.pt"
                torch.save({
                    "config": config.to_dict(), "epoch": epoch + 1, "step": step,
                    "elapsed_s": clock(), "world_size": world.size,
                    "supernet": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "strategy": strategy.state_dict(), "warm_rng": warm_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                }, ckpt_path.with_suffix(".tmp"))
                ckpt_path.with_suffix(".tmp").replace(ckpt_path)
            emit({"stage": "epoch", "epoch": epoch + 1, "epochs": config.epochs})
        # a kill in the search stage resumes from the last epoch's checkpoint and runs the whole
        # stage again: it is seeded, so the result is the same
        step = _search_stage(loop, step)
    finally:
        if loop.log_f is not None:
            loop.log_f.close()
    result = broadcast_object(_final_result(loop, run.cost_res, step, out), world)
    loop.train_net = train_net = None  # drop the DDP wrapper before the process group goes
    return result  # every rank returns rank 0's result (the same but for its own clock)


@dataclass
class _Loop:
    """The state one search step reads: the run's pieces, this rank's place, the log."""

    config: SearchConfig
    world: object  # hwnas.distributed.World
    space: object
    net: object  # the supernet (scoring, checkpoints)
    train_net: object  # what a training step calls: the supernet, or its DDP wrapper
    optimizer: object
    strategy: object
    costs: "_Costs"
    data: object
    steps_per_epoch: int
    vb: int
    clock: Callable[[], float]
    emit: Callable[[dict], None]
    log_f: object = None

    def evaluate(self, archs, x, y, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy of each arch on ``(x, y)`` with the shared weights; the ranks
        split the archs between them and gather the results (every rank gets all of them)."""
        from hwnas.distributed import all_gather_object
        from hwnas.nn.supernet_train import evaluate_arch

        w = self.world
        mine = [(i, *evaluate_arch(self.net, archs[i], (x, y), batch_size=batch_size))
                for i in range(w.rank, len(archs), w.size)]
        scored = sorted(r for part in all_gather_object(mine, w) for r in part)
        return (np.asarray([r[1] for r in scored], dtype=np.float64),
                np.asarray([r[2] for r in scored], dtype=np.float64))


def _open_run(config: SearchConfig, out: Path | None) -> dict | None:
    """The checkpoint to resume from, if any; refuses a run folder that cannot be used as asked."""
    if out is None:
        return None
    ckpt_path = out / "checkpoint.pt"
    if config.resume and ckpt_path.exists():
        import torch

        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = checkpoint["config"]
        diff = [k for k, v in config.to_dict().items()
                if k not in _RESUMABLE and jsonutil.to_jsonable(saved.get(k)) != jsonutil.to_jsonable(v)]
        if diff:
            raise SearchError(f"cannot resume {out}: settings differ from the checkpoint's: "
                              + ", ".join(f"{k}={config.to_dict()[k]!r} (was {saved.get(k)!r})" for k in diff))
        return checkpoint
    if not config.resume and (ckpt_path.exists() or (out / "result.json").exists()):
        raise SearchError(f"{out} already holds a search run; pass --resume to continue it or choose another --out")
    return None


def _budget_costs(config: SearchConfig, space, cost_res: int | None) -> _Costs:
    """Load the predictor, build the budget's cost function and check the budget (before any file or data)."""
    predictor = _load_predictor(config, space)
    budget = cost_fn = None
    if config.latency_budget_ms is not None:
        budget = pen.Budget("latency", float(config.latency_budget_ms))
        cost_fn = pen.latency_cost_fn(predictor, quantile=config.budget_quantile)
    elif config.flops_budget is not None:
        budget = pen.Budget("flops", float(config.flops_budget))
        # checked with the space's class count first (fail fast, before loading data)
        cost_fn = pen.flops_cost_fn(space, cost_res, None)
    crange = pen.budget_check(space, budget, cost_fn, seed=config.seed) if budget is not None else None
    return _Costs(predictor, budget, cost_fn, crange)


def _data_costs(costs: _Costs, config: SearchConfig, space, cost_res: int | None, ncls: int) -> None:
    """Complete ``costs`` once the dataset's class count is known (it sets the classifier's FLOPs)."""
    budget, predictor = costs.budget, costs.predictor
    if budget is not None and budget.kind == "flops":
        costs.cost_fn = pen.flops_cost_fn(space, cost_res, ncls)
        costs.expected_fn = pen.expected_flops_fn(space, cost_res, ncls)
    elif budget is not None and getattr(predictor, "differentiable", False):
        costs.expected_fn = predictor.expected_latency_torch
    if predictor is not None:
        # a latency budget's cost function already predicts (and memoises) the same numbers
        latency_budget = budget is not None and budget.kind == "latency"
        # (not with a tail budget: its cost is a quantile, the logged latency is the median prediction)
        costs.lat_fn = (costs.cost_fn if latency_budget and config.budget_quantile is None
                        else pen.latency_cost_fn(predictor))
    if config.penalty == "differentiable" and budget is not None:
        if costs.expected_fn is None:
            raise SearchError(f"the differentiable penalty needs a differentiable latency predictor (an 'mlp'); "
                              f"{config.predictor} is a {type(predictor).__name__}: use --penalty hinge or mnas")
        costs.penalty_fn = pen.differentiable_penalty(costs.expected_fn, budget.limit, config.penalty_weight)


def switch_epoch(config: SearchConfig) -> int:
    """FP-NAS's switch epoch: the configured one, else half of the search epochs."""
    search_epochs = config.epochs - config.warmup_epochs
    return int(config.switch_epoch) if config.switch_epoch is not None else search_epochs // 2


def _make_strategy(config: SearchConfig, space, steps_per_epoch: int, costs: _Costs, val_batch: int):
    """The configured strategy; FP-NAS switches after ``switch_epoch`` search epochs; a
    strategy with a ``feasible`` slot (evolution) gets the budget as a predicate."""
    sparams = dict(seed=config.seed, samples_per_step=config.samples_per_step)
    if config.strategy in ("parsec", "fpnas"):
        sparams["arch_lr"] = config.arch_lr
    if config.strategy == "fpnas":
        sparams["switch_step"] = steps_per_epoch * switch_epoch(config)
    sparams.update(config.strategy_params)
    strategy = create_strategy(config.strategy, space, **sparams)
    needs_grad = costs.penalty_fn is not None or (config.penalty == "logcost" and costs.budget is not None)
    if needs_grad and not strategy.differentiable:
        raise SearchError(f"the {config.penalty} penalty acts on a distribution's gradient (parsec, fpnas), "
                          f"which {config.strategy!r} has not: use --penalty hinge or mnas")
    if hasattr(strategy, "feasible") and costs.cost_fn is not None:
        cost_fn, limit = costs.cost_fn, costs.limit
        strategy.feasible = lambda arch: float(cost_fn([arch])[0]) <= limit
    if getattr(strategy, "estimator", None) == "importance":
        if config.reward_kind != "loss":
            raise SearchError("the importance estimator weights archs by their validation log-likelihood: "
                              "it needs reward='loss' (or estimator='reinforce' for accuracy rewards)")
        strategy.likelihood_scale = float(val_batch)  # n * mean log-likelihood = the batch's log-likelihood
    return strategy


def _search_epoch(loop: _Loop, warm_rng, epoch: int, step: int) -> int:
    """One epoch: a supernet step per training batch, plus (after warm-up) a strategy step on
    one validation batch; returns the search-step counter.

    The batch of a step is ``batch_size`` images over all ranks: ``DistributedSampler`` gives
    rank r every world-size-th image of the epoch's permutation, so the ranks' shards of step b
    together are exactly the single-process batch b (with one rank, the same permutation as
    before the data-parallel search existed)."""
    import torch
    from torch.utils.data import DistributedSampler

    config, world, space, strategy = loop.config, loop.world, loop.space, loop.strategy
    xtr, ytr = loop.data.train.tensors
    yva = loop.data.val.tensors[1]
    n_val, vb = len(yva), loop.vb
    loop.net.train()
    sampler = DistributedSampler(loop.data.train, num_replicas=world.size, rank=world.rank, shuffle=True,
                                 seed=config.seed * 1000)
    sampler.set_epoch(epoch)
    mine = torch.as_tensor(list(sampler))
    per_rank = config.batch_size // world.size
    warm = epoch < config.warmup_epochs
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + 500))
    uniform = warm or config.train_sampler == "uniform"
    for b in range(loop.steps_per_epoch):
        idx = mine[b * per_rank:(b + 1) * per_rank]
        if uniform:
            archs = None
            paths = [space.sample(warm_rng)]  # every rank draws rank 0's path, so warm_rng stays replicated
        else:
            archs = strategy.ask()
            paths = archs if config.train_paths == 0 else archs[:config.train_paths]
        paths = _rank_paths(loop, paths, archs, epoch, b)
        sync_bn = world.active and _same_paths_on_all_ranks(config, archs)
        train_loss = _supernet_step(loop, paths, xtr[idx], ytr[idx], warm, sync_bn=sync_bn)
        if uniform:
            loop.emit({"stage": "warmup" if warm else "train", "epoch": epoch, "batch": b,
                       "steps_per_epoch": loop.steps_per_epoch, "train_loss": train_loss})
            continue
        start = (b * vb) % max(n_val - vb + 1, 1)
        step += 1
        rec = _strategy_step(loop, archs, vperm[start:start + vb], step, epoch, train_loss)
        loop.emit({"stage": "search", "epoch": epoch, "batch": b, "steps_per_epoch": loop.steps_per_epoch, **rec})
    return step


def _rank_paths(loop: _Loop, paths: list, archs: list | None, epoch: int, batch: int) -> list:
    """The paths this rank trains on: rank 0's ``paths`` on rank 0 (and on every rank with
    ``rank_paths='shared'``, or when every sampled arch trains: ``train_paths=0``); otherwise
    rank r draws as many of its own from the same distribution, with a generator seeded by
    (seed, epoch, batch, rank), so the draws need no state and survive a resume with another
    world size.  Uniform training (warm-up, ``train_sampler='uniform'``) draws uniformly;
    a strategy without a distribution (random, evolution) lends rank r the next ones of its
    own proposals."""
    config, world = loop.config, loop.world
    if world.is_main or _same_paths_on_all_ranks(config, archs):
        return paths
    rng = np.random.default_rng([config.seed, epoch, batch, world.rank])
    if archs is None:
        return [loop.space.sample(rng) for _ in paths]
    if loop.strategy.is_distribution:
        return loop.strategy.dist.sample(len(paths), rng)
    return [archs[(world.rank * len(paths) + j) % len(archs)] for j in range(len(paths))]


def _same_paths_on_all_ranks(config: SearchConfig, archs: list | None) -> bool:
    """Whether every rank trains rank 0's paths this step (then BN can use all ranks' images)."""
    return config.rank_paths == "shared" or (archs is not None and config.train_paths == 0)


def _strategy_step(loop: _Loop, archs, vidx, step: int, epoch: int, train_loss, stage: bool = False) -> dict:
    """Rewards of ``archs`` on one validation batch, shaped by the budget, told to the strategy;
    returns (and, on rank 0, logs) the step's record.  Every rank scores its share of the archs,
    gathers all the rewards and applies the same update, so the ranks' distributions stay
    identical (checked every epoch) without broadcasting them."""
    config, costs, strategy = loop.config, loop.costs, loop.strategy
    xva, yva = loop.data.val.tensors
    losses, accs = loop.evaluate(archs, xva[vidx], yva[vidx], loop.vb)
    raw = -losses if config.reward_kind == "loss" else accs
    arch_costs = costs.cost_fn(archs) if costs.cost_fn is not None else None
    rewards = pen.shape_rewards(raw, arch_costs, costs.limit, config.penalty,
                                weight=config.penalty_weight, mnas_w=config.mnas_w, accuracy=accs)
    step_penalty = costs.penalty_fn
    if config.penalty == "logcost" and costs.budget is not None:
        step_penalty = pen.log_cost_penalty(strategy.dist, archs, arch_costs, costs.limit, config.penalty_weight)
    strategy.tell(archs, rewards, penalty=step_penalty)
    cost_kind = None if costs.budget is None else costs.budget.kind
    rec = _step_record(strategy, step, epoch, archs, losses, accs, rewards, arch_costs, costs.budget,
                       costs.expected_fn, costs.lat_fn, train_loss, cost_kind)
    rec["time_s"] = round(loop.clock(), 3)
    if stage:
        rec["phase"] = "search stage" if rec["phase"] == "-" else f"search stage ({rec['phase']})"
    if loop.log_f is not None:
        loop.log_f.write(jsonutil.dumps(rec) + "\n")
        loop.log_f.flush()
    return rec


def _search_stage(loop: _Loop, step: int) -> int:
    """``search_stage_steps`` ask/tell rounds on the frozen supernet (no weight update), on
    validation batches in a seeded order; returns the step counter."""
    import torch

    config, vb = loop.config, loop.vb
    n_val = len(loop.data.val.tensors[1])
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + 999))
    for k in range(int(config.search_stage_steps)):
        start = (k * vb) % max(n_val - vb + 1, 1)
        step += 1
        rec = _strategy_step(loop, loop.strategy.ask(), vperm[start:start + vb], step, config.epochs, None,
                             stage=True)
        loop.emit({"stage": "search", "epoch": config.epochs, "batch": k,
                   "steps_per_epoch": config.search_stage_steps, **rec})
    return step


def _supernet_step(loop: _Loop, paths, xb, yb, warm: bool, sync_bn: bool = False) -> float:
    """One SGD step on a training batch over ``paths``; returns the (weighted) training loss
    of this rank's shard.

    ``weight_estimator="mean"``: the plain mean of the paths' losses (they are samples of the
    distribution, so it estimates ``E_alpha[loss]``).  ``"importance"``: PARSEC's weight
    gradient, ``sum_k omega_k grad loss_k`` with ``omega = softmax(-n * loss)``, the paths'
    self-normalised likelihoods of the batch (``n`` its size), held fixed; under torchrun the
    paths' losses are averaged over the ranks first, so omega is the whole batch's.

    With ``sync_bn`` (every rank trains the same paths) BN normalises over the images of all
    ranks (``Supernet.synced_bn``), so N ranks of B images compute what one process does with
    N*B; otherwise over this rank's shard.  Gradients are averaged over the ranks by DDP
    (inside ``backward``; a rank's paths then run in one backward, since DDP reduces once per
    backward) or, with ``grad_sync='allreduce'``, by one all-reduce after the per-path backwards."""
    import torch.nn.functional as F

    from hwnas.distributed import average_gradients

    world, net = loop.world, loop.net
    param = next(net.parameters())
    xb, yb = xb.to(param.device, param.dtype), yb.to(param.device)
    ddp = loop.train_net is not net

    def path_loss(a):
        net.set_active_subnet(a)
        return F.cross_entropy(loop.train_net(xb), yb)

    loop.optimizer.zero_grad()
    with net.synced_bn() if sync_bn else contextlib.nullcontext():
        train_loss = _backward(loop, paths, path_loss, len(yb), warm, ddp)
    if not ddp:
        average_gradients(net.parameters(), world)
    loop.optimizer.step()
    return train_loss


def _backward(loop: _Loop, paths, path_loss, n: int, warm: bool, ddp: bool) -> float:
    """The backward pass(es) of ``_supernet_step``; returns this rank's training loss."""
    import torch

    config, world = loop.config, loop.world
    if warm or config.weight_estimator == "mean" or len(paths) == 1:
        if ddp:
            loss = sum(path_loss(a) for a in paths) / len(paths)
            loss.backward()
            train_loss = float(loss.detach())
        else:
            train_loss = 0.0
            for a in paths:  # one backward per path keeps one path's activations in memory
                loss = path_loss(a) / len(paths)
                loss.backward()
                train_loss += float(loss.detach())
    else:
        losses = torch.stack([path_loss(a) for a in paths])
        batch_losses = losses.detach().clone()
        if world.active:
            import torch.distributed as dist

            dist.all_reduce(batch_losses)
            batch_losses /= world.size
        omega = torch.softmax(-n * world.size * batch_losses, 0)
        loss = (omega * losses).sum()
        loss.backward()
        train_loss = float(loss.detach())
    return train_loss


def _final_result(loop: _Loop, cost_res: int | None, step: int, out: Path | None) -> SearchResult:
    """Pick the final arch (``penalty.select_final``), measure it, and (rank 0) write the run's result files."""
    import torch

    from hwnas.cost import arch_cost
    from hwnas.nn.supernet_train import evaluate_arch

    config, space, net, strategy, costs, data = (loop.config, loop.space, loop.net, loop.strategy, loop.costs,
                                                 loop.data)
    fallback = costs.crange.min_arch if costs.crange is not None else None
    choice = pen.select_final(strategy, costs.cost_fn, costs.limit, fallback=fallback)
    arch = choice.arch
    xva, yva = data.val.tensors
    val_loss, val_acc = evaluate_arch(net, arch, (xva, yva), batch_size=loop.vb)
    points, cost_kind = _pareto_points(loop, cost_res)
    ac = arch_cost(space, arch, cost_res, data.num_classes)
    wall = loop.clock()
    pred_ms = float(costs.lat_fn([arch])[0]) if costs.lat_fn is not None else None
    margin = None
    if costs.budget is not None:
        margin = costs.budget.margin(pred_ms if costs.budget.kind == "latency" else ac.flops)
    result = SearchResult(
        space=space.name, arch=str(arch), resolution=space.resolution(arch, cost_res), strategy=config.strategy,
        seed=config.seed, dataset=data.name, predictor=config.predictor,
        latency_budget_ms=config.latency_budget_ms, flops_budget=config.flops_budget, penalty=config.penalty,
        predicted_latency_ms=pred_ms, flops=int(ac.flops), params=int(ac.params),
        supernet_val_acc=float(val_acc), supernet_val_loss=float(val_loss),
        archs_sampled=int(strategy.archs_sampled), search_steps=int(step), epochs=config.epochs,
        wall_time_s=round(float(wall), 3), budget_margin=None if margin is None else float(margin),
        final_choice=choice.how,
        final_log_prob=strategy.log_prob(arch) if strategy.is_distribution else None,
        entropy=strategy.entropy() if strategy.is_distribution else None,
        switched_at=getattr(strategy, "switched_at", None), out=None if out is None else str(out),
        budget_quantile=config.budget_quantile, world_size=loop.world.size,
    )
    per_budget = _per_budget(config, costs, points, result, choice.cost)
    result = dataclasses.replace(result, per_budget=per_budget, pareto_front=len(pareto.front(points)))
    if out is not None and loop.world.is_main:
        torch.save(net.state_dict(), out / "supernet.pt")
        _write_json(out / "result.json", result.to_dict())
        _write_json(out / "pareto.json", pareto.to_json(points, cost_kind, per_budget))
        pareto.plot(points, per_budget, cost_kind, out / "pareto.png", f"{config.strategy} on {space.name}")
        records = read_log(out / "log.jsonl") if (out / "log.jsonl").exists() else []
        if records:
            plot_log(records, out / "search.png", f"{config.strategy} on {space.name}: {arch}")
    return result


def _pareto_points(loop: _Loop, cost_res):
    """Candidates of ``pareto.candidates`` scored on the whole validation split (the ranks share
    the scoring), with their cost (the budget's cost; else predicted latency; else FLOPs)."""
    from hwnas.cost import arch_cost

    config, space, strategy, costs, data = loop.config, loop.space, loop.strategy, loop.costs, loop.data
    sampled = {a: int(rec[1]) for a, rec in strategy._records.items()}
    pool = pareto.candidates(space, sampled, strategy, seed=config.seed)
    archs = [space.parse(a) for a in pool]
    if costs.cost_fn is not None:
        cost_kind, cost = costs.budget.kind, costs.cost_fn(archs)
    elif costs.lat_fn is not None:
        cost_kind, cost = "latency", costs.lat_fn(archs)
    else:
        cost_kind = "flops"
        cost = np.array([arch_cost(space, a, cost_res, data.num_classes).flops for a in archs], dtype=np.float64)
    losses, accs = loop.evaluate(archs, *data.val.tensors, loop.vb)
    points = [pareto.Point(str(a), float(c), float(acc), float(loss), pool[str(a)])
              for a, c, loss, acc in zip(archs, cost, losses, accs)]
    return points, cost_kind


def _per_budget(config: SearchConfig, costs: _Costs, points, result: SearchResult, cost: float) -> list | None:
    """One pick per budget: the run's own pick (``cost`` by the budget's cost function) for its
    budget, the Pareto candidates' most accurate for the others."""
    if costs.budget is None:
        return None
    out = []
    for b in sorted({float(costs.limit), *(float(x) for x in config.budgets)}):
        if b == float(costs.limit):
            out.append({"budget": b, "arch": result.arch, "cost": float(cost), "acc": result.supernet_val_acc,
                        "how": f"search ({result.final_choice})"})
            continue
        p = pareto.pick(points, b)
        out.append({"budget": b, "arch": None if p is None else p.arch, "cost": None if p is None else p.cost,
                    "acc": None if p is None else p.acc, "how": "pareto" if p else "no candidate meets it"})
    return out


def _step_record(strategy, step, epoch, archs, losses, accs, rewards, costs, budget, expected_fn, lat_fn,
                 train_loss, cost_kind) -> dict:
    import torch

    rec = {
        "step": step, "epoch": epoch, "k": len(archs), "archs_sampled": strategy.archs_sampled,
        "phase": strategy.phase, "train_loss": None if train_loss is None else round(train_loss, 5),
        "loss": round(float(losses.mean()), 5), "acc": round(float(accs.mean()), 5),
        "reward": round(float(np.mean(rewards)), 5),
        "entropy": None, "top_arch": None, "expected_cost": None, "expected_latency_ms": None,
        "cost_kind": cost_kind, "budget": None if budget is None else budget.limit,
        "mean_cost": None if costs is None else float(np.mean(costs)),
    }
    if strategy.is_distribution:
        rec["entropy"] = round(strategy.entropy(), 5)
        top = strategy.dist.argmax()
        rec["top_arch"] = str(top)
        if expected_fn is not None:
            with torch.no_grad():
                rec["expected_cost"] = float(expected_fn(strategy.probs()))
        if lat_fn is not None:
            if budget is not None and budget.kind == "latency" and rec["expected_cost"] is not None:
                rec["expected_latency_ms"] = rec["expected_cost"]
            else:
                rec["expected_latency_ms"] = float(lat_fn([top])[0])  # of the top arch
    else:
        rec["top_arch"] = str(strategy.best())
    return rec
