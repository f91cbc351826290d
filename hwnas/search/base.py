"""The ``Strategy`` interface (ask/tell, Optuna's sampler idea) and the strategy registry.

Why ask/tell: the search loop owns the supernet, the data and the budget; a strategy only
proposes architectures and learns from the rewards it is told.  Budgets never live inside
a strategy: they reach it already folded into the rewards (reward shaping) or, for the
differentiable penalty, as an extra loss on its probabilities passed to ``tell``.

A new strategy is one module with a ``@register_strategy("name")`` class plus one import
line in ``hwnas/search/__init__.py``.
"""
from __future__ import annotations

import abc
from typing import Callable, Sequence

import numpy as np

from hwnas.errors import RegistryError, SearchError, valid_list
from hwnas.search.registry import Registry
from hwnas.space import Arch, SearchSpace

PenaltyFn = Callable[[list], "object"]  # list[torch.Tensor] (probs per decision) -> scalar tensor


class Strategy(abc.ABC):
    """Proposes architectures (``ask``) and learns from their rewards (``tell``).

    Higher reward is better.  ``archs_sampled`` counts every architecture handed out by
    ``ask``: the cost metric FP-NAS and PARSEC are compared on.
    """

    name: str = "base"
    #: whether the strategy holds a distribution (``probs``/``entropy`` work)
    is_distribution: bool = False
    #: whether its distribution learns by gradient, so a penalty on it (``differentiable``,
    #: ``logcost``) can act: PARSEC and FP-NAS, not the rule-based tables (DDPNAS, MdeNAS)
    differentiable: bool = False
    #: whether its distribution learns by the gradient of a relaxed supernet forward (DMaskingNAS,
    #: ``relaxed_step.py``) instead of from told rewards: ``tell`` then only records scores
    relaxed: bool = False
    #: settings of ``SearchConfig`` that choosing this strategy implies when the config leaves
    #: them unset (``None``), e.g. GreedyNAS's ``{"train_sampler": "greedy", "search_stage_steps": 20}``:
    #: a two-stage method is then one flag, and every setting stays overridable
    preset: dict = {}

    def __init__(self, space: SearchSpace, *, seed: int = 0, samples_per_step: int = 8):
        if int(samples_per_step) < 1:
            raise SearchError(f"samples_per_step must be >= 1, got {samples_per_step}")
        self.space = space
        self.seed = int(seed)
        self.samples_per_step = int(samples_per_step)
        self.rng = np.random.default_rng(self.seed)
        self.archs_sampled = 0
        self.steps = 0
        self._records: dict[str, list[float]] = {}  # arch string -> [reward sum, count]

    @classmethod
    def run_params(cls, config, steps_per_epoch: int) -> dict:
        """Constructor settings this strategy takes from the run (``run_setup.make_strategy``),
        under the user's ``strategy_params``: e.g. FP-NAS's switch step, in steps of this run;
        default none."""
        return {}

    # -- the interface -----------------------------------------------------
    def num_samples(self) -> int:
        """How many archs the next ``ask()`` hands out when ``n`` is not given."""
        return self.samples_per_step

    def ask(self, n: int | None = None) -> list[Arch]:
        n = self.num_samples() if n is None else int(n)
        if n < 1:
            raise SearchError(f"ask(n) needs n >= 1, got {n}")
        archs = self._propose(n)
        self.archs_sampled += len(archs)
        return archs

    def tell(self, archs: Sequence[Arch], rewards: Sequence[float], penalty: PenaltyFn | None = None) -> None:
        """Learn from ``rewards`` (one per arch, higher is better)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if len(archs) != len(rewards) or len(archs) == 0:
            raise SearchError(f"tell needs one reward per arch, got {len(archs)} archs and {len(rewards)} rewards")
        if not np.all(np.isfinite(rewards)):
            raise SearchError(f"rewards must be finite, got {rewards.tolist()}")
        for a, r in zip(archs, rewards):
            rec = self._records.setdefault(str(a), [0.0, 0])
            rec[0] += float(r)
            rec[1] += 1
        self._update(list(archs), rewards, penalty)
        self.steps += 1

    @abc.abstractmethod
    def _propose(self, n: int) -> list[Arch]:
        ...

    def _update(self, archs: list[Arch], rewards: np.ndarray, penalty: PenaltyFn | None) -> None:
        """Default: nothing to learn (the reward records are kept by ``tell``)."""

    def best(self) -> Arch:
        """The strategy's pick: best mean reward seen (distributions: most likely arch)."""
        ranked = self.ranked(1)
        if not ranked:
            raise SearchError(f"strategy {self.name!r} has no result yet: call tell() first")
        return ranked[0]

    def ranked(self, k: int) -> list[Arch]:
        """Up to ``k`` archs in order of preference (used to pick a final arch under a budget)."""
        items = sorted(self._records.items(), key=lambda kv: -kv[1][0] / kv[1][1])
        return [self.space.parse(s) for s, _ in items[:k]]

    def mean_reward(self, arch: Arch) -> float | None:
        rec = self._records.get(str(arch))
        return None if rec is None else rec[0] / rec[1]

    # -- persistence -------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "name": self.name, "space": self.space.name, "seed": self.seed,
            "rng": self.rng.bit_generator.state, "archs_sampled": self.archs_sampled,
            "steps": self.steps, "records": {k: list(v) for k, v in self._records.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name or state.get("space") != self.space.name:
            raise SearchError(
                f"strategy state is for {state.get('name')!r} on space {state.get('space')!r}, "
                f"not {self.name!r} on {self.space.name!r}"
            )
        self.rng.bit_generator.state = state["rng"]
        self.archs_sampled = int(state["archs_sampled"])
        self.steps = int(state["steps"])
        self._records = {k: [float(v[0]), int(v[1])] for k, v in state["records"].items()}

    # -- optional for distribution strategies ------------------------------
    def probs(self) -> list:
        raise SearchError(f"strategy {self.name!r} holds no distribution (no probs())")

    def entropy(self) -> float:
        raise SearchError(f"strategy {self.name!r} holds no distribution (no entropy())")

    @property
    def phase(self) -> str:
        """A short label of the strategy's current phase (logged per step)."""
        return "-"


class DistributionViews:
    """What every strategy holding ``self.dist`` (a ``CategoricalDistribution``) answers the
    same way: probabilities, entropy, exact top-k, log-probability, sampling from it."""

    is_distribution = True

    def probs(self) -> list:
        """Differentiable per-decision probability vectors (choices in space order)."""
        return self.dist.probs()

    def entropy(self) -> float:
        return self.dist.entropy()

    def ranked(self, k: int) -> list[Arch]:
        return [a for a, _ in self.dist.top_k(k)]

    def log_prob(self, arch: Arch) -> float:
        import torch

        with torch.no_grad():
            return float(self.dist.log_prob([arch])[0])

    def _propose(self, n: int) -> list[Arch]:
        return self.dist.sample(n, self.rng)


# -- registry (timm/torchvision style: duplicates refused, unknown names listed) -----
_STRATEGIES = Registry("strategy", Strategy, lambda name, valid: RegistryError(
    f"unknown strategy {name!r}; valid: {valid_list(valid)}"))
register_strategy = _STRATEGIES.register
unregister_strategy = _STRATEGIES.unregister
list_strategies = _STRATEGIES.names
strategy_class = _STRATEGIES.get


def create_strategy(name: str, space: SearchSpace, **params) -> Strategy:
    """Instantiate a registered strategy; unknown names and parameters are errors."""
    cls = strategy_class(name)
    try:
        return cls(space, **params)
    except TypeError as e:
        raise SearchError(f"bad parameters for strategy {name!r}: {e}") from None
