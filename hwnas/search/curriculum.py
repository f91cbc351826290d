"""A class curriculum for the search (the brief's E9; DA-NAS-style, Dai et al., ECCV 2020,
arXiv 2003.12563): the supernet and the rewards see the easiest classes first, then more,
until every class is active.

Why its own module: one job, which classes are active at an epoch and what that means for a
step (which images of a batch stay, which logits count), so the loop's pieces (``epoch``,
``loop``, ``checkpoint``, ``run_setup``) only call it, and any strategy can use it
(``SearchConfig.class_schedule``, ``hwnas search --class-schedule 3,6,10``); ``danas`` requires it.

DA-NAS's procedure could not be verified (only its abstract was available:
``../shared/research/seed_strategies.md`` 3.5), so every rule below is **ours** unless said:

- **Stages.** ``class_schedule = (n_1, ..., n_S)``: strictly increasing counts >= 2, the last
  the dataset's class count.  The search epochs (``epochs - warmup_epochs``; warm-up trains on
  every class) are split into ``S`` stages as evenly as possible, the *earlier* stages taking
  the shorter share: with ``E`` search epochs, stage ``k`` (0-based) lasts ``E // S`` epochs,
  plus one for the last ``E % S`` stages (``stage_lengths``).  ``E >= S`` is required (a stage
  is at least one epoch).  Extending a run with ``--resume --epochs`` moves the boundaries of
  the stages still to come (as FP-NAS's default switch epoch).
- **Easy first.** At the end of warm-up (before the first search epoch), the per-class
  validation accuracy of ``ORDER_PATHS`` (8) uniform paths of the warm-up supernet (drawn
  from a generator seeded by the run's seed, scored on the whole validation split with BN
  batch statistics, as the loop scores), averaged over the paths; classes in order of
  decreasing accuracy, ties by class index.  DA-NAS says only that the learning speed of
  blocks depends on the classes' difficulty; its criterion is unverified.  Rank 0 computes
  the order and broadcasts it; it is saved in the checkpoint, so a resume uses the same.
  The active classes of stage ``k`` are the first ``n_k`` of the order.
- **Training batches** keep only the images of the active classes: the batch shrinks (the
  saving DA-NAS claims: fewer images early).  The number of steps per epoch does not change,
  so every schedule counted in steps (FP-NAS's switch, GreedyNAS's epsilon, danas's stage
  ends) stays put.  A supernet step whose batch is empty on any rank is skipped (every rank
  knows every rank's shard, so they skip together); its strategy step still runs.
- **Validation batches** (the rewards, a sampler's ``score``): the epoch's seeded validation
  permutation restricted to the active classes, in windows of ``val_batch_size`` as without a
  curriculum: a strategy step's batch is never empty and keeps its size (our choice: the step
  count then never changes, and early rewards are not noisier for holding fewer images).
- **Logits.** The classifier keeps every output; inside a curriculum epoch a forward hook on
  the supernet sets the inactive classes' logits to ``MASKED_LOGIT`` (-1e4, finite as the
  pruning floor, so a distillation loss stays NaN-free), so every loss, accuracy and reward
  of the epoch (training loss of any sampler, ``LoopState.evaluate``) is over the active
  classes only: ``exp(-1e4 - max)`` is exactly 0, so the cross-entropy equals the one over
  the active logits alone.  The hook sees ``Supernet.__call__`` (DDP's too), not
  ``forward_relaxed``, so a relaxed strategy (dmasking) is refused with a curriculum.
- Warm-up, the search stage on the frozen supernet, the final arch and the Pareto front use
  every class (the last stage has every class anyway, and is run without hook or filter).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from hwnas.errors import SearchError

#: logit of an inactive class: finite (no NaN in a KL or entropy), and exp() of it is 0
MASKED_LOGIT = -1e4
#: uniform paths whose per-class validation accuracy orders the classes (our choice)
ORDER_PATHS = 8
#: offset of the seed of their generator (any constant; fixed so a seed fixes the order)
ORDER_SEED_OFFSET = 4813


def stage_lengths(search_epochs: int, stages: int) -> list[int]:
    """Epochs per stage: as even as possible, the earlier stages taking the shorter share."""
    base, extra = divmod(int(search_epochs), int(stages))
    return [base + (1 if k >= stages - extra else 0) for k in range(stages)]


def stage_end_steps(config, steps_per_epoch: int) -> tuple[int, ...]:
    """The search step after which each stage but the last ends (one strategy step per
    training batch in the coupled search): what ``danas`` prunes at."""
    sched = tuple(config.class_schedule)
    if not sched:
        return ()
    ends = np.cumsum(stage_lengths(config.epochs - config.warmup_epochs, len(sched)))[:-1]
    return tuple(int(steps_per_epoch * e) for e in ends)


def check_schedule(schedule, search_epochs: int) -> tuple[int, ...]:
    """The config-only checks (``SearchConfig``): integers >= 2, strictly increasing, at most one
    stage per search epoch; returns the schedule as a tuple of ints."""
    sched = tuple(schedule)
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in sched):
        raise SearchError(f"class_schedule must be class counts (integers), e.g. (3, 6, 10), got {list(sched)}")
    sched = tuple(int(n) for n in sched)
    if any(n < 2 for n in sched):
        raise SearchError(f"class_schedule counts must be >= 2 (a stage needs two classes to tell apart), "
                          f"got {list(sched)}")
    if any(b <= a for a, b in zip(sched, sched[1:])):
        raise SearchError(f"class_schedule must be strictly increasing, got {list(sched)}")
    if len(sched) > search_epochs:
        raise SearchError(f"class_schedule has {len(sched)} stages but the run has {search_epochs} search "
                          f"epoch(s) (epochs - warmup_epochs): a stage needs at least one")
    return sched


@dataclass
class Curriculum:
    """The run's class curriculum: its schedule, stages and (after warm-up) easy-first order."""

    schedule: tuple[int, ...]
    num_classes: int
    warmup_epochs: int
    search_epochs: int
    order: list[int] | None = None  # class indices, easiest first; None until warm-up has ended
    starts: list[int] = field(init=False)  # first epoch of each stage

    def __post_init__(self):
        lengths = stage_lengths(self.search_epochs, len(self.schedule))
        self.starts = [self.warmup_epochs + int(s) for s in np.cumsum([0] + lengths[:-1])]

    def stage_of(self, epoch: int) -> int | None:
        """The 0-based stage of ``epoch``; None in warm-up.  (Epochs past the configured ones,
        after ``--resume --epochs``, belong to the last stage.)"""
        if epoch < self.warmup_epochs:
            return None
        return max(k for k, s in enumerate(self.starts) if s <= epoch)

    def active(self, epoch: int) -> list[int] | None:
        """The active classes of ``epoch`` (sorted), or None when every class is (warm-up, last stage)."""
        k = self.stage_of(epoch)
        if k is None or self.schedule[k] >= self.num_classes:
            return None
        if self.order is None:
            raise SearchError("the curriculum's class order is computed at the end of warm-up (rank_classes)")
        return sorted(self.order[:self.schedule[k]])

    def rank_classes(self, loop) -> list[int]:
        """The easy-first order from the current (warm-up) supernet; rank 0's, on every rank."""
        from hwnas.distributed import broadcast_object

        order = class_order(loop.net, loop.space, loop.data.val.tensors, self.num_classes, loop.vb,
                            seed=loop.config.seed) if loop.world.is_main else None
        self.order = [int(c) for c in broadcast_object(order, loop.world)]
        return self.order

    def epoch_view(self, loop, epoch: int) -> "EpochView | None":
        """What epoch ``epoch`` trains and scores on; None: every class (no filter, no mask)."""
        if self.stage_of(epoch) is not None and self.order is None:
            self.rank_classes(loop)  # the first search epoch: warm-up has just ended
        active = self.active(epoch)
        return None if active is None else EpochView(loop, epoch, active)

    def state_dict(self) -> dict:
        return {"schedule": list(self.schedule), "order": None if self.order is None else list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.order = None if state.get("order") is None else [int(c) for c in state["order"]]


def make_curriculum(config, num_classes: int, dataset: str) -> Curriculum | None:
    """The run's curriculum (None without a schedule); refuses counts beyond the dataset's classes
    and a last stage without every class (``run_setup.setup``, right after the data is loaded)."""
    sched = tuple(config.class_schedule)
    if not sched:
        return None
    if sched[-1] > num_classes:
        raise SearchError(f"class_schedule {list(sched)} asks for {sched[-1]} classes but {dataset} has "
                          f"{num_classes} classes")
    if sched[-1] != num_classes:
        raise SearchError(f"class_schedule {list(sched)} must end with every class: its last count is "
                          f"{sched[-1]} but {dataset} has {num_classes} classes")
    return Curriculum(sched, int(num_classes), int(config.warmup_epochs), config.epochs - config.warmup_epochs)


def class_order(net, space, val, num_classes: int, batch_size: int, *, seed: int,
                paths: int = ORDER_PATHS) -> list[int]:
    """Classes by decreasing mean per-class validation accuracy of ``paths`` seeded uniform
    paths of ``net`` (BN batch statistics, batches of ``batch_size`` in the split's order, as
    ``evaluate_arch`` scores), ties by class index."""
    import torch

    rng = np.random.default_rng([int(seed), ORDER_SEED_OFFSET])
    archs = [space.sample(rng) for _ in range(int(paths))]
    correct = np.zeros(num_classes)
    x_all, y_all = val
    param = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), net.batch_stats():
            for a in archs:
                seen = 0
                for i in range(0, len(y_all), batch_size):
                    x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
                    if len(y) < 2 and seen:  # a trailing 1-image batch has no batch statistics (as evaluate_arch)
                        continue
                    pred = net(x.to(param.device, param.dtype), a).argmax(1).cpu()
                    correct += np.bincount(y[pred == y].numpy(), minlength=num_classes)[:num_classes]
                    seen += len(y)
    finally:
        net.train(was_training)
    counts = np.bincount(y_all.numpy(), minlength=num_classes)[:num_classes]
    acc = correct / (len(archs) * np.maximum(counts, 1))  # a class without validation images: 0, hardest
    return [int(c) for c in np.lexsort((np.arange(num_classes), -acc))]


class EpochView:
    """One curriculum epoch: its active classes, the filtered batches, the logit mask."""

    def __init__(self, loop, epoch: int, active: list[int]):
        import torch
        from torch.utils.data import DistributedSampler

        config, world = loop.config, loop.world
        self.active = list(active)
        self.keep = torch.zeros(loop.data.num_classes, dtype=torch.bool)
        self.keep[self.active] = True
        self.ytr = loop.data.train.tensors[1]
        self.per_rank = config.batch_size // world.size
        # every rank's shard of the epoch (the same DistributedSampler as epoch.py's), so that
        # all ranks skip a step together when any rank's filtered shard is empty
        self.shards = []
        for r in range(world.size):
            s = DistributedSampler(loop.data.train, num_replicas=world.size, rank=r, shuffle=True,
                                   seed=config.seed * 1000)
            s.set_epoch(epoch)
            self.shards.append(torch.as_tensor(list(s)))
        yva = loop.data.val.tensors[1]
        vperm = torch.randperm(len(yva), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch + 500))
        self.vperm = vperm[self.keep[yva[vperm]]]
        self.vb = loop.vb

    def train_batch(self, idx, b: int):
        """``idx`` (this rank's shard of batch ``b``) without the inactive classes' images, or None
        when the step is skipped (some rank's filtered shard is empty)."""
        for shard in self.shards:
            part = shard[b * self.per_rank:(b + 1) * self.per_rank]
            if not bool(self.keep[self.ytr[part]].any()):
                return None
        return idx[self.keep[self.ytr[idx]]]

    def val_batch(self, b: int):
        """The validation indices of batch ``b``: a window of the active classes' permutation."""
        n, vb = len(self.vperm), self.vb
        start = (b * vb) % max(n - vb + 1, 1)
        return self.vperm[start:start + vb]

    @contextlib.contextmanager
    def masking(self, net):
        """Within this block every ``net(...)`` returns the inactive classes' logits at ``MASKED_LOGIT``."""
        def hook(module, args, out):
            return masked_logits(out, self.active)

        handle = net.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def masked_logits(logits, active):
    """``logits`` with the classes not in ``active`` at ``MASKED_LOGIT`` (the hook of ``EpochView.masking``)."""
    import torch

    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[list(active)] = True
    return logits.masked_fill(~keep, MASKED_LOGIT)
