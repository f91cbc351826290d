"""DMaskingNAS (FBNetV2; Wan, Dai, Zhang, He, Tian, Xie, Wu, Yu, Xu, Chen, Vajda & Gonzalez,
CVPR 2020, arXiv 2004.05565): differentiable search with Gumbel-weighted channel masks in one
widest forward.

Sources: the abstract [paper] and the brief ``../shared/research/seed_strategies.md`` 3.7.  The
search code was never released (``facebookresearch/mobile-vision`` issue #29, open and
unanswered), and the paper's method and experiment sections could not be read here, so every
equation and hyper-parameter below is [paper?] or FBNet v1's (Wu et al., CVPR 2019, which
FBNetV2 builds on), through the third-party code the brief read [code-3p].

The method, as built:

- **Architecture parameters**: the factorized distribution (``CategoricalDistribution(space,
  factorized=True)``): one categorical per named dimension of a decision (kernel, expansion,
  width, se, block, splits, skip, resolution), uniform over choices at the start, as FP-NAS
  starts.  Those logits are FBNetV2's per-layer, per-dimension alpha.
- **Relaxed supernet** (``hwnas.nn.relaxed``, ``Supernet.forward_relaxed``): Gumbel-softmax
  gates ``g = softmax((alpha + G) / tau)`` per dimension weight channel masks on the widest
  tensors (width, expansion), an effective kernel, and mixed ops for SE, block type and skip;
  equal to the single path for one-hot gates.  Resolution is *not* FBNetV2's masking: the
  live resolutions run one relaxed forward each and mix their logits (see ``relaxed.py``).
- **Alternation** (FBNet Sec. 3.4 [paper?]): after warm-up, every training batch trains the
  weights on the relaxed forward with gates sampled from the current alpha, held fixed
  (``RelaxedSampler``, ``--train-sampler relaxed``); then alpha takes one Adam step on the
  step's validation batch, through the gates (``relaxed_step.py``).  Both use the strategy's
  seeded generator for the Gumbel noise, so a resume continues the same noise.
- **Temperature**: FBNet v1's schedule, 5.0 multiplied by ``exp(-0.045)`` per epoch over its
  80 search epochs (90, 10 of them warm-up [code-3p]), ends at ``5 exp(-3.6) = 0.137``.  hwnas
  runs are a few epochs, so the same geometric decay from ``tau0`` to ``tau_end`` is spread
  over the run's search steps: ``tau_t = tau0 (tau_end / tau0) ** (t / T)`` (our stretching).
- **Cost**: the budget enters the loss as hwnas's differentiable penalty
  ``mu * max(0, E[c] / T - 1)`` on the distribution's probabilities (``--penalty
  differentiable``, the preset): ``E[c]`` is the exact expected FLOPs or the MLP predictor's
  expected latency (``penalty.py``).  FBNet's multiplicative loss ``CE * a * log(LAT) ** b``
  (``a = 0.2, b = 0.6`` [code-3p]) and FBNetV2's effective-shape cost (a product of
  expectations, a different surrogate) are not built.  Hinge and mnas shape rewards, which a
  relaxed search never sees: they are refused with a budget (``run_setup.make_strategy``).
- **Adam on alpha**: FBNet v1 uses lr 1e-2 and weight decay 1e-4 [code-3p] over 80 ImageNet
  epochs (~100k steps); hwnas runs have ~100 steps, so the run's ``arch_lr`` (as for PARSEC and
  FP-NAS) is the learning rate; ``arch_weight_decay`` keeps FBNet's 1e-4.
- **Final arch**: the most likely arch under alpha that meets the budget
  (``penalty.select_final``), FBNet's argmax derivation.

``tell`` learns nothing here: alpha moves by ``relaxed_update`` only, and ``tell``/``record``
keep the rewards of the archs scored each step (the Pareto front's candidates).  The config
refuses a search stage or another training sampler with this strategy, and the relaxed sampler
with another strategy (``config._check_sampler``).  Refused spaces: joint ones (``fbnet``:
no per-dimension gates) and grouped ops (``relaxed.check_relaxable``); private BN is refused
by the relaxed forward and by ``make_strategy``.
"""
from __future__ import annotations

import copy
import math

import torch

from hwnas.errors import ArchError, SearchError
from hwnas.search.base import DistributionViews, Strategy, register_strategy
from hwnas.search.distribution import CategoricalDistribution
from hwnas.search.train_samplers import Draw, RelaxedPath, ScoreFn, TrainSampler, register_train_sampler
from hwnas.space import Arch, SearchSpace

#: FBNet v1's schedule (module docstring): tau0 5.0, times exp(-0.045) for each of 80 search epochs
TAU0 = 5.0
TAU_END = TAU0 * math.exp(-0.045 * 80)
#: FBNetV2's arXiv number: the Gumbel generator's seed offset
_SEED = 2004_05565


@register_strategy("dmasking")
class DMaskingNAS(DistributionViews, Strategy):
    """FBNetV2's DMaskingNAS: Gumbel-softmax gates over a factorized distribution, learnt by
    the gradient of the relaxed supernet's validation loss plus the budget's penalty."""

    relaxed = True
    differentiable = True
    preset = {"train_sampler": "relaxed", "penalty": "differentiable"}

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 1, arch_lr: float = 0.3,
                 arch_weight_decay: float = 1e-4, tau0: float = TAU0, tau_end: float = TAU_END,
                 total_steps: int | None = None, hard: bool = False):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step)
        from hwnas.nn.relaxed import check_relaxable

        try:
            check_relaxable(space)
        except ArchError as e:
            raise SearchError(f"dmasking needs a space its relaxed forward can run: {e}") from None
        for name, v in (("arch_lr", arch_lr), ("tau0", tau0), ("tau_end", tau_end)):
            if not (float(v) > 0 and math.isfinite(float(v))):
                raise SearchError(f"dmasking: {name} must be a positive number, got {v}")
        if not (float(arch_weight_decay) >= 0 and math.isfinite(float(arch_weight_decay))):
            raise SearchError(f"dmasking: arch_weight_decay must be >= 0, got {arch_weight_decay}")
        if float(tau_end) > float(tau0):
            raise SearchError(f"dmasking: the temperature anneals down: need tau_end <= tau0, got {tau_end} > {tau0}")
        if total_steps is not None and int(total_steps) < 1:
            raise SearchError(f"dmasking: total_steps must be >= 1, got {total_steps}")
        self.arch_lr, self.arch_weight_decay = float(arch_lr), float(arch_weight_decay)
        self.tau0, self.tau_end = float(tau0), float(tau_end)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.hard = bool(hard)
        self.dist = CategoricalDistribution(space, factorized=True)
        self.optimizer = torch.optim.Adam(self.dist.params, lr=self.arch_lr, weight_decay=self.arch_weight_decay)
        self.gen = torch.Generator().manual_seed(self.seed + _SEED)

    @classmethod
    def run_params(cls, config, steps_per_epoch: int) -> dict:
        """The run's ``arch_lr``, and its search steps: the temperature anneals over them."""
        return {"arch_lr": config.arch_lr, "total_steps": steps_per_epoch * (config.epochs - config.warmup_epochs)}

    @property
    def phase(self) -> str:
        return "relaxed"

    def temperature(self) -> float:
        """``tau0 (tau_end / tau0) ** (t / T)`` after ``t`` relaxed steps of ``T`` (``tau0`` without ``T``)."""
        if self.total_steps is None:
            return self.tau0
        share = min(self.steps / self.total_steps, 1.0)
        return self.tau0 * (self.tau_end / self.tau0) ** share

    def sample_gates(self, requires_grad: bool) -> list:
        """Gumbel-softmax gates at the current temperature from the strategy's generator; with
        ``requires_grad`` they carry the gradient to alpha (the architecture step), else they
        are constants (the weights' step)."""
        from hwnas.nn.relaxed import gates_from_flat, gumbel_gates

        logits = [p if requires_grad else p.detach() for p in self.dist.params]
        return gumbel_gates(gates_from_flat(self.space, logits), self.temperature(), generator=self.gen,
                            hard=self.hard)

    def relaxed_update(self, loss) -> None:
        """One Adam step of alpha on ``loss`` (a scalar that depends on gates of ``sample_gates(True)``
        and, for the penalty, on ``probs()``); the gradient goes to alpha only, never to the
        supernet's weights."""
        params = self.dist.params
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.optimizer.zero_grad()
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach().to(p.dtype)
        self.optimizer.step()

    def record(self, arch: Arch, reward: float) -> None:
        """Keep the reward of an arch a relaxed step scored (counted in ``archs_sampled``)."""
        self.archs_sampled += 1
        self.tell([arch], [reward])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(dist=self.dist.state_dict(), optimizer=copy.deepcopy(self.optimizer.state_dict()),
                     gen=self.gen.get_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.dist.load_state_dict(state["dist"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])


@register_train_sampler("relaxed")
class RelaxedSampler(TrainSampler):
    """DMaskingNAS's weight step: the relaxed forward at constant gates sampled from the
    strategy, then the strategy's relaxed step on the validation batch (``Draw.relaxed_step``).
    The gates come from the strategy's replicated generator: every rank trains the same ones."""

    relaxed = True
    same_paths_on_all_ranks = True

    def draw(self, epoch: int, batch: int, score: ScoreFn) -> Draw:
        return Draw([RelaxedPath(self.ctx.strategy.sample_gates(requires_grad=False))], relaxed_step=True)
