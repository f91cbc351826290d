"""Training samplers: which paths the supernet trains on a batch, and with what loss.

Why an extension point of its own (``../shared/research/seed_strategies.md`` E3): several
seed methods change how the supernet is *trained*, not how architectures are proposed.
GreedyNAS trains only the best of several scored paths, AttentiveNAS the best and worst at a
sampled FLOPs target with distillation, BN-NAS only BN, Pi-NAS two paths with a consistency
loss.  A strategy (``base.Strategy``, ask/tell) cannot do that: it sees rewards only after the
step.  So the driver asks the run's sampler, once per training batch after warm-up, for a
``Draw``: the paths to train, and (coupled search only) the strategy's archs to score and
tell after the step.  Warm-up always trains uniform single paths.

The protocol is a small ABC, as ``Strategy`` is.  A sampler implements ``draw`` and may
override ``loss`` (default: cross-entropy of one path; it gets the batch's images as ``xb``
for a teacher), ``after_step`` (after every optimizer step, gradients in place: Pi-NAS's
teacher), ``begin_training`` (as warm-up ends, with the supernet), ``train_params`` (train
only some weights after warm-up: BN-NAS), ``finished`` (end training early: GreedyNAS),
``before_search_stage`` (hand what it learnt to the strategy before the two-stage search on
the frozen supernet), and ``state_dict``/``load_state_dict`` (everything it needs to continue
identically after a resume; it joins ``checkpoint.pt``).  ``__init__`` takes and validates the
sampler's hyper-parameters only (so ``SearchConfig`` can refuse bad ones before anything runs);
``bind`` attaches the run (``SamplerContext``).  The budget reaches a sampler only as the
``feasible`` predicate of its context.  A new sampler is one class with
``@register_train_sampler("name")``.

Built in here: ``strategy`` (the coupled search of PARSEC / FP-NAS: the strategy's samples train)
and ``uniform`` (single-path one-shot, SPOS, Guo et al. ECCV 2020: the strategy only searches
the trained supernet).  GreedyNAS's ``greedy`` lives in ``greedynas.py``, BN-NAS's ``bn_only`` in
``bnnas.py``, AttentiveNAS's ``attentive`` in ``attentivenas.py``, the Pi-NAS-style ``pinas`` in
``pinas.py``, and DMaskingNAS's ``relaxed`` (whose one "path" is every choice at once, a
``RelaxedPath``) in ``dmasking.py``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hwnas.errors import SearchError, valid_list
from hwnas.search.registry import Registry
from hwnas.space import Arch

#: ``score(archs) -> rewards`` (higher is better) on the current batch's validation images,
#: with the shared weights and BN batch statistics (the loop's ``evaluate``)
ScoreFn = Callable[[list], np.ndarray]


@dataclass(frozen=True)
class Draw:
    """What a sampler decided for one training batch."""

    paths: list  # list[Arch | RelaxedPath]: trained on the batch (by this rank; see ``train_step.rank_paths``)
    archs: list | None = None  # the strategy's asks, scored and told after the step; None: no strategy step
    #: a differentiable strategy's step follows (DMaskingNAS: its gates learn on the validation
    #: batch by gradient, ``relaxed_step.py``) in place of ask/tell
    relaxed_step: bool = False


@dataclass(frozen=True)
class RelaxedPath:
    """A "path" that is every choice at once, weighted by ``gates`` (``Supernet.forward_relaxed``:
    FBNetV2's masked widest forward); the training step runs it in place of a single path."""

    gates: list  # per decision, {dimension: gate vector}


@dataclass(frozen=True)
class SamplerContext:
    """The run, as a sampler sees it."""

    config: object  # SearchConfig
    space: object  # SearchSpace
    strategy: object  # Strategy
    warm_rng: np.random.Generator  # the warm-up's generator (uniform draws continue its stream)
    steps_per_epoch: int
    feasible: Callable[[Arch], bool] | None = None  # the budget as a predicate; None: no budget
    fallback: Arch | None = None  # an arch known to meet the budget (its cheapest), None without one

    @property
    def train_steps(self) -> int:
        """Training batches after warm-up in the configured epochs (the sampler's schedule length)."""
        return self.steps_per_epoch * (self.config.epochs - self.config.warmup_epochs)

    def progress(self, epoch: int, batch: int) -> float:
        """Share of the post-warm-up training done before batch ``batch`` of ``epoch``, in [0, 1]."""
        t = (epoch - self.config.warmup_epochs) * self.steps_per_epoch + batch
        return min(max(t / max(self.train_steps, 1), 0.0), 1.0)


class TrainSampler(abc.ABC):
    """Chooses the paths (and the loss) of each supernet training batch."""

    name: str = "base"
    #: the coupled search: its draws carry the strategy's asks, told after every training step
    asks_strategy: bool = False
    #: under torchrun every rank trains the sampler's paths (they are the ranks' common choice,
    #: its generator is replicated), and BN normalises over all ranks' images
    same_paths_on_all_ranks: bool = False
    #: trains the relaxed supernet for a relaxed strategy (``Strategy.relaxed``: DMaskingNAS); the
    #: two go together
    relaxed: bool = False

    def __init__(self):
        self.archs_scored = 0  # archs the sampler scored itself (counted into ``archs_sampled``)
        self.ctx: SamplerContext | None = None

    def bind(self, ctx: SamplerContext) -> "TrainSampler":
        self.ctx = ctx
        return self

    @abc.abstractmethod
    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        """The paths to train on batch ``batch`` of ``epoch``; ``score`` rates candidates first."""

    def loss(self, forward, yb, path, *, xb=None):
        """The training loss of ``path`` on the batch; ``forward(path)`` returns its logits
        (``xb``, the batch's images, for a sampler that runs another network on them: a teacher)."""
        import torch.nn.functional as F

        return F.cross_entropy(forward(path), yb)

    def after_step(self, net, paths) -> None:
        """Called after each optimizer step of the sampler's paths, with their gradients still in
        place (Pi-NAS: the mean teacher follows the weights the paths trained); default: nothing."""

    def before_search_stage(self, strategy) -> None:
        """Called once before the search stage on the frozen supernet (default: nothing to hand over)."""

    @property
    def finished(self) -> bool:
        """Whether supernet training should end now (GreedyNAS's early stop on a stable pool):
        the loop stops after the current batch and goes on to the search stage; default never."""
        return self.stopped_at is not None

    @property
    def stopped_at(self) -> int | None:
        """Post-warm-up training steps after which the sampler ended training (``finished``);
        None: it has not (``SearchResult.train_stopped_at``)."""
        return None

    def begin_training(self, net) -> None:
        """Called once when warm-up ends, with the supernet (and on a resume past warm-up, before
        the checkpoint's state is loaded into the sampler): Pi-NAS copies its mean teacher here;
        default: nothing."""

    def train_params(self, net) -> list | None:
        """The parameter groups the optimizer gets after warm-up, for a sampler that trains only
        some weights (BN-NAS: BN, the rest frozen); None (default): every weight, and the
        warm-up's optimizer simply continues.  Called once when warm-up ends (and on a resume
        past it, before the checkpoint's optimizer state is loaded)."""
        return None

    def state_dict(self) -> dict:
        return {"name": self.name, "archs_scored": self.archs_scored}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise SearchError(f"training sampler state is for {state.get('name')!r}, not {self.name!r}")
        self.archs_scored = int(state["archs_scored"])


# -- registry (duplicates refused, unknown names listed) ----------------------------
_SAMPLERS = Registry("training sampler", TrainSampler, lambda name, valid: SearchError(
    f"train_sampler must be one of {valid_list(valid)}, got {name!r}"))
register_train_sampler = _SAMPLERS.register
unregister_train_sampler = _SAMPLERS.unregister
list_train_samplers = _SAMPLERS.names
train_sampler_class = _SAMPLERS.get


def create_train_sampler(name: str, **params) -> TrainSampler:
    """Instantiate a registered sampler with its hyper-parameters (unknown ones are errors)."""
    cls = train_sampler_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise SearchError(f"bad parameters for train_sampler {name!r}: {e}") from None


# -- the built-in samplers --------------------------------------------------------------
@register_train_sampler("strategy")
class StrategySampler(TrainSampler):
    """The coupled search (PARSEC, FP-NAS): ``strategy.ask()`` per batch; the first
    ``train_paths`` of its archs train (0: all of them), then all are scored and told."""

    asks_strategy = True

    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        archs = self.ctx.strategy.ask()
        n = self.ctx.config.train_paths
        return Draw(archs if n == 0 else archs[:n], archs)


@register_train_sampler("uniform")
class UniformSampler(TrainSampler):
    """One uniform path per batch (SPOS), drawn from the warm-up's generator: a uniform run's
    paths continue the warm-up's stream, so its state is the warm-up generator's (checkpointed)."""

    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        return Draw([self.ctx.space.sample(self.ctx.warm_rng)])
