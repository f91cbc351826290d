"""BN-NAS (Chen, Peng, Wang, Liu, Li, Zhang & Ouyang, "BN-NAS: Neural Architecture Search with
Batch Normalization", ICCV 2021, arXiv 2108.07375): train only the supernet's BN parameters,
then rank paths by their BN scales without data, by evolution under the budget.

Sources: the abstract [paper] ("more than 10x faster" supernet training, "more than 600,000x
faster" subnet evaluation); the authors' code ``bychen515/BNNAS @ 6570c92`` [code]:
``supernet/main.py`` (freezing), ``supernet/train.py`` (uniform paths), ``search/ea.py``
(indicator, evolution); ``../shared/research/seed_strategies.md`` 3.6.  The supernet pieces
(per-choice BN, ``train_only_bn``, ``bn_indicator``) are in ``hwnas.nn.bn_nas``.

The method as a run (``--strategy bnnas`` is the one-flag preset of all four settings, each
still overridable):

1. ``private_bn=("project",)``: every op choice of a slot owns the BN after its last 1x1
   conv, so the indicator can tell a slot's choices apart (hwnas otherwise shares one BN per
   position across the choices, and their gammas would be equal).
2. ``train_sampler="bn_only"`` (``BNOnlySampler``): after the loop's uniform warm-up epochs
   (every weight trains), uniform single paths (SPOS; ``supernet/train.py`` samples
   uniformly) train with only BN parameters: ``bns="last"`` is the official filter
   (``'7.weight' / '7.bias'``, the last BN of each candidate block) [code], ``"all"`` every BN
   (the abstract's wording).  Every other parameter gets ``requires_grad=False`` and is left
   out of the optimizer, so it stays bit-identical; BN gets no weight decay (the official
   ``get_optimizer_schedule`` decays only conv and classifier weights) [code].
   Warm-up: the official code freezes at initialisation, with no warm-up of all weights
   [code]; here the loop's ``warmup_epochs`` (default 1) train every weight first, so BN-NAS
   is compared with the other methods from the same warm-up, and ``--warmup-epochs 0`` is the
   official setting.  Whether the paper trains all weights briefly first is [paper?].
3. ``reward="bn"``: fitness = the BN indicator ``sum_l mean_c |gamma_{l, o_l, c}|`` of the
   path's project BNs (``ea.py`` ``get_bn_scores``) [code], read from the weights: no image is
   run (``strategy_step`` logs loss and accuracy as null).  In a space with skippable layers
   (``tiny``) the indicator averages over the layers that have a BN instead (``reduce="mean"``;
   summing would make a skip, which has no BN and adds 0, always lose; the official space
   fixes depth, so the question never arises there); in a fixed-depth space it is the paper's
   sum.  This is an hwnas extension, not the paper's.
4. ``search_stage_steps=20``: SPOS-style evolution (``evolution.py``) on the frozen supernet,
   every proposal under the budget (the loop's feasibility predicate, as ``ea.py``'s
   ``is_legal`` rejects over the FLOPs limit); population 50, 10 parents, 25 mutations
   (``m_prob`` 0.1) and 25 crossovers, 20 generations, as ``search/ea.py`` [code].

Not built: the official linearly decayed learning rate (0.25 to 5e-4; the loop's is constant,
see ``loop.py``), label smoothing 0.1 and gradient-value clipping at 5 [code]; retraining the
winner from scratch is ``hwnas export``'s job.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import SearchError, valid_list
from hwnas.search.base import register_strategy
from hwnas.search.evolution import Evolution
from hwnas.search.train_samplers import UniformSampler, register_train_sampler

__all__ = ["BNNAS", "BNOnlySampler", "bn_rewards", "indicator_reduce"]


def indicator_reduce(space) -> str:
    """``"sum"`` (the paper's) when no layer of ``space`` can be skipped, else ``"mean"`` over the
    layers that have a BN (see the module docstring, point 3)."""
    return "mean" if any(op.skip for layer in space.layers for op in layer.ops) else "sum"


def bn_rewards(net, archs) -> np.ndarray:
    """BN-NAS's data-free score of each arch in ``archs`` (higher is better) on supernet ``net``,
    whose ``project`` BN must be private (``hwnas.nn.bn_nas.bn_indicator`` refuses otherwise)."""
    from hwnas.nn.bn_nas import bn_indicator

    if archs is None:
        raise SearchError("reward='bn' scores archs from the supernet's BN weights: pass the archs")
    reduce = indicator_reduce(net.space)
    return np.asarray([bn_indicator(net, a, ("project",), reduce=reduce) for a in archs], dtype=np.float64)


@register_train_sampler("bn_only")
class BNOnlySampler(UniformSampler):
    """Uniform single paths that train only BN parameters (``bns``: ``"last"``, the official
    filter, or ``"all"``); see the module docstring, point 2.  Its paths continue the warm-up's
    generator, as the ``uniform`` sampler's do, so its state is that checkpointed generator."""

    def __init__(self, *, bns: str = "last"):
        from hwnas.nn.bn_nas import BN_TRAINABLE

        super().__init__()
        if bns not in BN_TRAINABLE:
            raise SearchError(f"bn_only bns (which BNs train) must be one of {valid_list(BN_TRAINABLE)}, got {bns!r}")
        self.bns = bns

    def train_params(self, net) -> list:
        """Freeze all but the chosen BNs' gamma and beta and return them as the one parameter
        group (no weight decay).  Gradients left from warm-up are dropped: the frozen weights
        take no part in any later step."""
        from hwnas.nn.bn_nas import train_only_bn

        for p in net.parameters():
            p.grad = None
        return [{"params": train_only_bn(net, self.bns), "weight_decay": 0.0}]


@register_strategy("bnnas")
class BNNAS(Evolution):
    """Evolution on the BN-only supernet with the BN indicator as fitness; the preset makes
    ``--strategy bnnas`` the whole method.  Its population is ``ea.py``'s 50 unless given,
    independent of the loop's ``samples_per_step``."""

    preset = {"train_sampler": "bn_only", "search_stage_steps": 20, "private_bn": ("project",), "reward": "bn"}

    def __init__(self, space, *, seed: int = 0, samples_per_step: int = 50, population: int | None = 50, **evolution):
        super().__init__(space, seed=seed, samples_per_step=samples_per_step, population=population, **evolution)
