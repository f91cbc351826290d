"""What a search run depends on (``SearchConfig``, saved as ``config.json``) and what it found
(``SearchResult``, ``result.json``).

Why its own module: the configuration is the one place every user error of a run is checked,
before any data is loaded or any file is written (the CLI turns the ``SearchError`` into one
line and exit code 2), and every other piece of the search reads it but never changes it.

Settings a strategy implies (``Strategy.preset``): ``train_sampler``, ``search_stage_steps``,
``private_bn``, ``reward`` and ``penalty`` left at ``None`` take the strategy's preset, else
``"strategy"``, ``0`` (the coupled search), ``()`` (shared BN), ``None`` (see ``reward_kind``)
and ``"hinge"``; so does ``class_schedule``, else ``()`` (no class curriculum).
They are resolved here, so ``config.json`` and a checkpoint always hold the values a run used.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hwnas.errors import SearchError, valid_list
from hwnas.search import penalty as pen

#: "bn": BN-NAS's data-free indicator from the supernet's private BN weights (``bnnas.bn_rewards``)
REWARDS = ("loss", "acc", "bn")
WEIGHT_ESTIMATORS = ("mean", "importance")
#: strategies whose papers rank by validation accuracy (their rules assume a reward in [0, 1])
ACC_REWARD_STRATEGIES = ("ddpnas", "mdenas")
#: fields that may change between a run and its --resume
RESUMABLE = {"epochs", "resume", "out", "threads", "force", "device", "grad_sync"}
#: under torchrun, which paths rank r > 0 trains: its own draws, or rank 0's (see ``train_step.rank_paths``)
RANK_PATHS = ("own", "shared")
#: what the preset-able settings are when neither the config nor the strategy's preset sets them
#: (``class_schedule`` ``()``: no class curriculum, ``curriculum.py``)
SAMPLER_DEFAULTS = {"train_sampler": "strategy", "search_stage_steps": 0, "private_bn": (), "reward": None,
                    "penalty": "hinge", "class_schedule": ()}


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
    # before the final pick, time this many of the run's most accurate candidates near the latency
    # budget here and adapt the predictor to them (``hwnas.search.refine``); 0: the base predictor
    refine: int = 0
    # how the budget enters (``penalty.py``); None: the strategy's preset (dmasking: "differentiable"), else "hinge"
    penalty: str | None = None
    penalty_weight: float = 2.0
    mnas_w: float = -0.07
    predictor: str | None = None
    force: bool = False
    # "loss" (-val loss), "acc", or "bn" (BN-NAS's indicator, no data; needs private_bn with "project");
    # None: the strategy's preset ("bn" for bnnas), else "acc" for ddpnas/mdenas (their papers'), else "loss"
    reward: str | None = None
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
    # who picks the paths the supernet trains on after warm-up (``train_samplers.py``):
    # "strategy" (its samples: the coupled search of PARSEC / FP-NAS), "uniform" (single-path
    # one-shot, SPOS), "greedy" (GreedyNAS's multi-path rejection); None: the strategy's preset
    train_sampler: str | None = None
    # hyper-parameters of the training sampler (e.g. greedy: pool_size, candidates, keep_top)
    train_sampler_params: dict = field(default_factory=dict)
    # ask/tell rounds on the frozen supernet after the last epoch (0: none): the two-stage search
    # of SPOS / GreedyNAS / BN-NAS, e.g. --strategy evolution --train-sampler uniform; None: the preset
    search_stage_steps: int | None = None
    # BN positions where every op choice of a slot gets its own BN (``Supernet(private_bn=...)``):
    # BN-NAS's indicator tells choices apart by them; None: the strategy's preset (bnnas: ("project",)), else ()
    private_bn: tuple[str, ...] | None = None
    # a class curriculum (``curriculum.py``, DA-NAS-style): active classes per stage of the search
    # epochs, easiest first, e.g. (3, 6, 10); strictly increasing, >= 2, the last the dataset's
    # class count; () off; None: the strategy's preset, else () (danas has none: it requires one)
    class_schedule: tuple[int, ...] | None = None
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
        self._resolve_preset()
        if self.epochs < 1 or self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise SearchError(f"need epochs >= 1 and 0 <= warmup_epochs < epochs, got epochs={self.epochs}, "
                              f"warmup_epochs={self.warmup_epochs}")
        if self.penalty not in pen.PENALTIES:
            raise SearchError(f"penalty must be one of {valid_list(pen.PENALTIES)}, got {self.penalty!r}")
        if self.reward is not None and self.reward not in REWARDS:
            raise SearchError(f"reward must be one of {valid_list(REWARDS)}, got {self.reward!r}")
        self._check_private_bn()
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
        if isinstance(self.refine, bool) or not isinstance(self.refine, int) or self.refine < 0:
            raise SearchError(f"refine must be an integer >= 0 (candidates to measure; 0: off), got {self.refine!r}")
        if self.refine and self.latency_budget_ms is None:
            raise SearchError("refine measures candidates near a latency budget: set latency_budget_ms "
                              "(--latency-budget) with a --predictor")
        self._check_sampler()
        self._check_strategy_params()
        self._check_class_schedule()
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

    def _resolve_preset(self) -> None:
        """Fill the settings left at ``None`` from the strategy's preset (an unknown strategy
        is refused here, before anything runs)."""
        from hwnas.search.base import strategy_class

        preset = strategy_class(self.strategy).preset
        for name, default in SAMPLER_DEFAULTS.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, preset.get(name, default))

    def _check_private_bn(self) -> None:
        """Known BN positions (kept as a tuple); the BN indicator needs the project BN private and
        no accuracy (so not the mnas penalty, which multiplies it)."""
        from hwnas.nn._supernet_layers import BN_POSITIONS

        names = (self.private_bn,) if isinstance(self.private_bn, str) else tuple(self.private_bn)
        object.__setattr__(self, "private_bn", names)
        bad = [n for n in names if n not in BN_POSITIONS]
        if bad:
            raise SearchError(f"private_bn must name BN positions among {valid_list(BN_POSITIONS)}, got {bad[0]!r}")
        if self.reward == "bn" and "project" not in names:
            raise SearchError(f"reward='bn' (BN-NAS's indicator) reads each choice's own project BN: it needs "
                              f"private_bn to include 'project', got private_bn={names!r}")
        if self.reward == "bn" and self.penalty == "mnas":
            raise SearchError("reward='bn' runs no image, so there is no accuracy for the mnas penalty: "
                              "use --penalty hinge")

    def _check_sampler(self) -> None:
        """The training sampler exists, its parameters are valid, and a sampler that never asks
        the strategy leaves it a search stage to search in."""
        from hwnas.search.base import strategy_class
        from hwnas.search.train_samplers import create_train_sampler, train_sampler_class

        cls = train_sampler_class(self.train_sampler)
        create_train_sampler(self.train_sampler, **self.train_sampler_params)  # validates the parameters
        if int(self.search_stage_steps) < 0:
            raise SearchError(f"search_stage_steps must be >= 0, got {self.search_stage_steps}")
        if strategy_class(self.strategy).relaxed != cls.relaxed:
            raise SearchError(f"strategy {self.strategy!r} and train_sampler {self.train_sampler!r} do not go together: "
                              "the relaxed sampler trains the supernet for a relaxed strategy (dmasking), and only it")
        if cls.relaxed and self.private_bn:
            raise SearchError(f"the relaxed forward mixes every choice through one shared BN per position: "
                              f"{self.strategy!r} needs private_bn off, got {self.private_bn!r}")
        if cls.relaxed and int(self.search_stage_steps) > 0:
            raise SearchError(f"{self.strategy!r} learns while the supernet trains; it has no search stage: "
                              f"give search_stage_steps 0, got {self.search_stage_steps}")
        if not cls.asks_strategy and not cls.relaxed and int(self.search_stage_steps) == 0:
            raise SearchError(f"train_sampler={self.train_sampler!r} trains the supernet without asking the strategy: "
                              "give search_stage_steps > 0 for the strategy to search the trained supernet")

    def _check_strategy_params(self) -> None:
        """The strategy takes ``strategy_params`` on this space (names and values; a strategy that
        cannot search the space, dmasking on a joint one, says so here), before any file exists."""
        from hwnas.search.base import create_strategy
        from hwnas.space import get_space

        create_strategy(self.strategy, get_space(self.space), seed=self.seed, **self.strategy_params)

    def _check_class_schedule(self) -> None:
        """The curriculum's config-only checks (``curriculum.check_schedule``; its counts against the
        dataset's classes wait for the data, ``run_setup.setup``), and a strategy that prunes at its
        stage ends (danas) has one and runs the coupled search, where it sees the stages."""
        from hwnas.search.base import strategy_class
        from hwnas.search.curriculum import check_schedule
        from hwnas.search.train_samplers import train_sampler_class

        object.__setattr__(self, "class_schedule", check_schedule(self.class_schedule,
                                                                  self.epochs - self.warmup_epochs))
        if getattr(strategy_class(self.strategy), "needs_class_schedule", False):
            if not self.class_schedule:
                raise SearchError(f"{self.strategy} (DA-NAS-style) prunes at the ends of a class curriculum's stages: "
                                  "give class_schedule, e.g. --class-schedule 3,6,10 for digits' 10 classes")
            if not train_sampler_class(self.train_sampler).asks_strategy:
                raise SearchError(f"{self.strategy} prunes as the curriculum's stages end, during the coupled search: "
                                  f"it needs train_sampler='strategy', got {self.train_sampler!r}")

    @property
    def reward_kind(self) -> str:
        if self.reward is not None:
            return self.reward
        return "acc" if self.strategy in ACC_REWARD_STRATEGIES else "loss"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_default(name: str):
    """The default of ``SearchConfig.<name>`` (what a checkpoint written before the field existed ran with)."""
    if name in SAMPLER_DEFAULTS:  # None means "the preset's"; runs before the field existed had no preset for it
        return SAMPLER_DEFAULTS[name]
    f = SearchConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


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
    # post-warm-up training steps after which the training sampler ended training (GreedyNAS's
    # early stop on a stable pool); None: it trained every epoch
    train_stopped_at: int | None = None
    # ``--refine``: the measured region, the adapted predictor's leave-one-out error there, and
    # the pick by the base predictor (``hwnas.search.refine.Refinement``); None: not refined
    refine: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
