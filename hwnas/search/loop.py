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
_RESUMABLE = {"epochs", "resume", "out", "threads", "force"}


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
    convs ran 5x slower with two on a loaded 2-vCPU machine) and gets its setting back after."""
    from hwnas.torch_threads import torch_threads

    with torch_threads(config.threads):
        return _run_search(config, progress)


def _run_search(config: SearchConfig, progress: Callable[[dict], None] | None) -> SearchResult:
    import torch

    from hwnas.data import load_dataset
    from hwnas.nn.supernet import Supernet
    from hwnas.space import get_space

    space = get_space(config.space)
    out = Path(config.out) if config.out else None
    checkpoint = _open_run(config, out)
    res = config.resolution or (max(space.resolutions) if space.searchable_resolution else space.default_resolution)
    cost_res = None if space.searchable_resolution else int(res)

    costs = _budget_costs(config, space, cost_res)
    if out is not None:  # the budget is sane: from here on the run leaves files
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", config.to_dict())
    data = load_dataset(config.dataset, int(res), seed=config.seed, limit=config.limit,
                        test_fraction=config.test_fraction)
    ncls = data.num_classes
    _data_costs(costs, config, space, cost_res, ncls)

    # -- strategy, supernet, optimizer ------------------------------------------------
    steps_per_epoch = max(1, len(data.train) // config.batch_size)
    vb = min(config.val_batch_size, len(data.val.tensors[1]))
    strategy = _make_strategy(config, space, steps_per_epoch, costs, vb)
    net = Supernet(space, ncls, int(res), seed=config.seed)
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
        _truncate_log(out / "log.jsonl", step)
        log.info("resuming %s at epoch %d (step %d)", out, start_epoch, step)
    elif out is not None and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()

    t_start = time.perf_counter()

    def clock() -> float:  # run time, the checkpoint's share included
        return elapsed + time.perf_counter() - t_start

    def emit(event: dict) -> None:
        if progress is not None:
            progress(event)

    log_f = open(out / "log.jsonl", "a") if out is not None else None
    try:
        for epoch in range(start_epoch, config.epochs):
            step = _search_epoch(config, space, net, optimizer, strategy, warm_rng, costs, data, epoch,
                                 steps_per_epoch, vb, step, clock, log_f, emit)
            if out is not None:
                ckpt_path = out / "checkpoint.pt"
                torch.save({
                    "config": config.to_dict(), "epoch": epoch + 1, "step": step,
                    "elapsed_s": clock(),
                    "supernet": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "strategy": strategy.state_dict(), "warm_rng": warm_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                }, ckpt_path.with_suffix(".tmp"))
                ckpt_path.with_suffix(".tmp").replace(ckpt_path)
            emit({"stage": "epoch", "epoch": epoch + 1, "epochs": config.epochs})
        # a kill in the search stage resumes from the last epoch's checkpoint and runs the whole
        # stage again: it is seeded, so the result is the same
        step = _search_stage(config, net, strategy, costs, data, vb, step, clock, log_f, emit)
    finally:
        if log_f is not None:
            log_f.close()
    return _final_result(config, space, net, strategy, costs, data, cost_res, vb, step, clock, out)


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


def _search_epoch(config: SearchConfig, space, net, optimizer, strategy, warm_rng, costs: _Costs, data, epoch: int,
                  steps_per_epoch: int, vb: int, step: int, clock, log_f, emit) -> int:
    """One epoch: a supernet step per training batch, plus (after warm-up) a strategy step on
    one validation batch; returns the search-step counter."""
    import torch

    xtr, ytr = data.train.tensors
    xva, yva = data.val.tensors
    n_train, n_val = len(data.train), len(yva)
    cost_kind = None if costs.budget is None else costs.budget.kind
    net.train()
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    warm = epoch < config.warmup_epochs
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + 500))
    uniform = warm or config.train_sampler == "uniform"
    for b in range(steps_per_epoch):
        idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
        xb, yb = xtr[idx], ytr[idx]
        if uniform:
            paths = [space.sample(warm_rng)]
        else:
            archs = strategy.ask()
            paths = archs if config.train_paths == 0 else archs[:config.train_paths]
        train_loss = _supernet_step(config, net, optimizer, paths, xb, yb, warm)
        if uniform:
            emit({"stage": "warmup" if warm else "train", "epoch": epoch, "batch": b,
                  "steps_per_epoch": steps_per_epoch, "train_loss": train_loss})
            continue
        start = (b * vb) % max(n_val - vb + 1, 1)
        step += 1
        rec = _strategy_step(config, net, strategy, costs, archs, (xva, yva), vperm[start:start + vb], vb, step,
                             epoch, train_loss, cost_kind, clock, log_f)
        emit({"stage": "search", "epoch": epoch, "batch": b, "steps_per_epoch": steps_per_epoch, **rec})
    return step


def _strategy_step(config: SearchConfig, net, strategy, costs: _Costs, archs, val, vidx, vb: int, step: int,
                   epoch: int, train_loss, cost_kind, clock, log_f, stage: bool = False) -> dict:
    """Rewards of ``archs`` on one validation batch, shaped by the budget, told to the strategy;
    returns (and logs) the step's record."""
    from hwnas.nn.supernet_train import evaluate_arch

    xva, yva = val
    losses, accs = zip(*(evaluate_arch(net, a, (xva[vidx], yva[vidx]), batch_size=vb) for a in archs))
    losses, accs = np.asarray(losses), np.asarray(accs)
    raw = -losses if config.reward_kind == "loss" else accs
    arch_costs = costs.cost_fn(archs) if costs.cost_fn is not None else None
    rewards = pen.shape_rewards(raw, arch_costs, costs.limit, config.penalty,
                                weight=config.penalty_weight, mnas_w=config.mnas_w, accuracy=accs)
    step_penalty = costs.penalty_fn
    if config.penalty == "logcost" and costs.budget is not None:
        step_penalty = pen.log_cost_penalty(strategy.dist, archs, arch_costs, costs.limit, config.penalty_weight)
    strategy.tell(archs, rewards, penalty=step_penalty)
    rec = _step_record(strategy, step, epoch, archs, losses, accs, rewards, arch_costs, costs.budget,
                       costs.expected_fn, costs.lat_fn, train_loss, cost_kind)
    rec["time_s"] = round(clock(), 3)
    if stage:
        rec["phase"] = "search stage" if rec["phase"] == "-" else f"search stage ({rec['phase']})"
    if log_f is not None:
        log_f.write(jsonutil.dumps(rec) + "\n")
        log_f.flush()
    return rec


def _search_stage(config: SearchConfig, net, strategy, costs: _Costs, data, vb: int, step: int, clock, log_f,
                  emit) -> int:
    """``search_stage_steps`` ask/tell rounds on the frozen supernet (no weight update), on
    validation batches in a seeded order; returns the step counter."""
    import torch

    xva, yva = data.val.tensors
    n_val = len(yva)
    cost_kind = None if costs.budget is None else costs.budget.kind
    vperm = torch.randperm(n_val, generator=torch.Generator().manual_seed(config.seed * 1000 + 999))
    for k in range(int(config.search_stage_steps)):
        start = (k * vb) % max(n_val - vb + 1, 1)
        step += 1
        rec = _strategy_step(config, net, strategy, costs, strategy.ask(), (xva, yva), vperm[start:start + vb], vb,
                             step, config.epochs, None, cost_kind, clock, log_f, stage=True)
        emit({"stage": "search", "epoch": config.epochs, "batch": k, "steps_per_epoch": config.search_stage_steps,
              **rec})
    return step


def _supernet_step(config: SearchConfig, net, optimizer, paths, xb, yb, warm: bool) -> float:
    """One SGD step on a training batch over ``paths``; returns the (weighted) training loss.

    ``weight_estimator="mean"``: the plain mean of the paths' losses (they are samples of the
    distribution, so it estimates ``E_alpha[loss]``).  ``"importance"``: PARSEC's weight
    gradient, ``sum_k omega_k grad loss_k`` with ``omega = softmax(-n * loss)``, the paths'
    self-normalised likelihoods of the batch (``n`` its size), held fixed."""
    import torch
    import torch.nn.functional as F

    optimizer.zero_grad()
    if warm or config.weight_estimator == "mean" or len(paths) == 1:
        train_loss = 0.0
        for a in paths:  # one backward per path keeps one path's activations in memory
            loss = F.cross_entropy(net(xb, a), yb) / len(paths)
            loss.backward()
            train_loss += float(loss.detach())
    else:
        losses = torch.stack([F.cross_entropy(net(xb, a), yb) for a in paths])
        omega = torch.softmax(-len(yb) * losses.detach(), 0)
        loss = (omega * losses).sum()
        loss.backward()
        train_loss = float(loss.detach())
    optimizer.step()
    return train_loss


def _final_result(config: SearchConfig, space, net, strategy, costs: _Costs, data, cost_res: int | None, vb: int,
                  step: int, clock, out: Path | None) -> SearchResult:
    """Pick the final arch (``penalty.select_final``), measure it, and write the run's result files."""
    import torch

    from hwnas.cost import arch_cost
    from hwnas.nn.supernet_train import evaluate_arch

    fallback = costs.crange.min_arch if costs.crange is not None else None
    choice = pen.select_final(strategy, costs.cost_fn, costs.limit, fallback=fallback)
    arch = choice.arch
    xva, yva = data.val.tensors
    val_loss, val_acc = evaluate_arch(net, arch, (xva, yva), batch_size=vb)
    points, cost_kind = _pareto_points(config, space, net, strategy, costs, data, cost_res, vb)
    ac = arch_cost(space, arch, cost_res, data.num_classes)
    wall = clock()
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
        budget_quantile=config.budget_quantile,
    )
    per_budget = _per_budget(config, costs, points, result, choice.cost)
    result = dataclasses.replace(result, per_budget=per_budget, pareto_front=len(pareto.front(points)))
    if out is not None:
        torch.save(net.state_dict(), out / "supernet.pt")
        _write_json(out / "result.json", result.to_dict())
        _write_json(out / "pareto.json", pareto.to_json(points, cost_kind, per_budget))
        pareto.plot(points, per_budget, cost_kind, out / "pareto.png", f"{config.strategy} on {space.name}")
        records = read_log(out / "log.jsonl") if (out / "log.jsonl").exists() else []
        if records:
            plot_log(records, out / "search.png", f"{config.strategy} on {space.name}: {arch}")
    return result


def _pareto_points(config: SearchConfig, space, net, strategy, costs: _Costs, data, cost_res, vb):
    """Candidates of ``pareto.candidates`` scored on the whole validation split, with their cost
    (the budget's cost; else predicted latency; else FLOPs)."""
    from hwnas.cost import arch_cost
    from hwnas.nn.supernet_train import evaluate_arch

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
    xva, yva = data.val.tensors
    points = []
    for a, c in zip(archs, cost):
        loss, acc = evaluate_arch(net, a, (xva, yva), batch_size=vb)
        points.append(pareto.Point(str(a), float(c), float(acc), float(loss), pool[str(a)]))
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
