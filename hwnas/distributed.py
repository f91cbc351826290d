"""Data-parallel runs under ``torchrun``: which rank this process is, and the few collectives a search needs.

Why its own module: the search loop (``hwnas.search.loop``) and the pipeline (``hwnas demo``)
both run unchanged in one process and as N ranks of ``torchrun --nproc-per-node N -m hwnas ...``.
Everything that differs between the two lives here, so a single process never imports
``torch.distributed`` machinery it does not use and every collective has a one-rank
shortcut that is exactly the old single-process code path.

The engine is PyTorch's own (``torch.distributed``: gloo on CPU, NCCL on CUDA;
``DistributedDataParallel`` for the gradients): no home-made sockets or queues.

Errors.  A user error found on one rank only (a checkpoint that does not match, a file one
node cannot read) would leave the other ranks waiting in their next collective until the
group's timeout.  ``agree`` runs a step, gathers every rank's ``HwnasError`` and raises the
same error on all ranks; the error is marked ``shared`` so that the CLI prints it once (on
rank 0) instead of once per rank.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Callable, TypeVar

from hwnas import errors
from hwnas.errors import HwnasError, SearchError

T = TypeVar("T")

#: how long a rank waits for the others in one collective (a rank 0 that profiles or loads
#: data while the others wait must fit in it)
TIMEOUT = datetime.timedelta(minutes=30)
GRAD_SYNCS = ("ddp", "allreduce")


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes logs, checkpoints, plots and results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def env_world() -> World:
    """The world ``torchrun`` describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (one rank without them)."""
    def read(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise HwnasError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None

    size = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise HwnasError(f"RANK={rank} and WORLD_SIZE={size} do not describe a rank of the run (need 0 <= RANK < "
                         "WORLD_SIZE); launch with torchrun")
    return World(rank, size, read("LOCAL_RANK", rank))


def current_world() -> World:
    """The joined process group's world if there is one, else the environment's."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), env_world().local_rank)
    return env_world()


@contextlib.contextmanager
def process_group(device: str = "cpu", timeout: datetime.timedelta = TIMEOUT):
    """Join torchrun's process group for the block: NCCL when ``device`` is CUDA, gloo on CPU.

    A no-op in one process, and when the group already exists (a search inside ``hwnas demo``
    joins the demo's group); the group is left only by the call that joined it.  ``timeout``:
    how long one collective waits for the slowest rank (``hwnas demo`` profiles on rank 0
    while the others wait, so it asks for longer)."""
    import torch.distributed as dist

    world = env_world()
    if not world.active or dist.is_initialized():
        yield current_world()
        return
    backend = "gloo"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SearchError(f"device {device!r} asked for CUDA but torch sees no GPU here; valid: cpu")
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield current_world()
    finally:
        # a DDP wrapper still alive (its hooks form reference cycles) when the group goes away
        # is destroyed at interpreter exit and aborts the process ("terminate called without an
        # active exception", seen under load after a complete run): collect it first
        import gc

        gc.collect()
        dist.destroy_process_group()


def check_batch(batch_size: int, world: World) -> None:
    """A step's ``batch_size`` is split over the ranks, so it must be a multiple of the world
    size (a ``SearchError`` naming the nearest valid sizes otherwise)."""
    if batch_size % world.size:
        lower = batch_size // world.size * world.size
        near = ", ".join(str(m) for m in (lower, lower + world.size) if m > 0)
        raise SearchError(f"batch_size={batch_size} is one step's batch over all {world.size} ranks and must "
                          f"be a multiple of the world size; valid nearby: {near}")


def rank_device(device: str, world: World) -> str:
    """The torch device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    if device == "cuda" and world.active:
        return f"cuda:{world.local_rank}"
    return device


# -- collectives (each exact and free with one rank) ---------------------------------
def all_gather_object(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order."""
    if not world.active:
        return [obj]
    import torch.distributed as dist

    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every rank."""
    if not world.active:
        return obj
    import torch.distributed as dist

    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(world: World, fn: Callable[[], T], *, main_only: bool = False) -> T:
    """Run ``fn`` on every rank (``main_only``: on rank 0, its result broadcast) and fail together.

    If any rank raises an ``HwnasError``, every rank raises the first such error (its class and
    message; ``rank N:`` is prepended when it came from a rank other than 0), marked
    ``shared = True`` so that only rank 0 reports it."""
    if not world.active:
        return fn()
    result, failure = None, None
    if world.is_main or not main_only:
        try:
            result = fn()
        except HwnasError as e:
            failure = (type(e).__name__, str(e))
    failures = all_gather_object(failure, world)
    for rank, f in enumerate(failures):
        if f is not None:
            cls = getattr(errors, f[0], HwnasError)
            err = cls(f[1] if rank == 0 else f"rank {rank}: {f[1]}")
            err.shared = True
            raise err
    return broadcast_object(result, world) if main_only else result


def digest(obj) -> str:
    """A digest of nested dicts/lists/tuples of tensors, arrays and plain values that depends only
    on their content (a tensor's pickle does not: it carries storage bookkeeping)."""
    import numpy as np
    import torch

    h = hashlib.sha256()

    def walk(o):
        if isinstance(o, torch.Tensor):
            o = o.detach().cpu().contiguous()
            h.update(f"T{o.dtype}{tuple(o.shape)}".encode())
            h.update(o.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, np.ndarray):
            h.update(f"A{o.dtype}{o.shape}".encode())
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                walk(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                walk(v)
            h.update(b"]")
        else:
            h.update(pickle.dumps(o))

    walk(obj)
    return h.hexdigest()


def check_identical(obj, world: World, what: str) -> None:
    """Raise if ``obj`` differs between ranks (their ``digest`` is compared): the ranks' copies
    of replicated state must never drift apart."""
    if not world.active:
        return
    digests = all_gather_object(digest(obj), world)
    if len(set(digests)) != 1:
        raise RuntimeError(f"the ranks' {what} diverged (digests {digests}): a bug in hwnas's data-parallel search")


def broadcast_buffers(module, world: World) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank.  Training normalises with
    batch statistics, so the running ones are not synchronised step by step (DDP's
    ``broadcast_buffers`` is off); this makes them identical before a checkpoint."""
    if not world.active:
        return
    import torch.distributed as dist

    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def average_gradients(params, world: World) -> None:
    """The explicit alternative to DDP (``grad_sync='allreduce'``): one flat all-reduce of every
    parameter's gradient (zeros where this rank's paths did not use it), divided by the world
    size; a parameter that no rank used keeps ``grad = None``, so SGD skips it exactly as it
    does in one process and under DDP."""
    if not world.active:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    used = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], dtype=torch.float64)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(used)
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p, u in zip(params, used.tolist()):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if u > 0 else None
        offset += n


def wrap_for_training(net, world: World, grad_sync: str, device: str):
    """The module the training step calls: ``DistributedDataParallel`` (``grad_sync='ddp'``,
    ``find_unused_parameters=True`` because a path uses a slice of the supernet) or the bare
    supernet (one rank, or ``'allreduce'``: ``average_gradients`` after the backward)."""
    if grad_sync not in GRAD_SYNCS:
        raise SearchError(f"grad_sync must be one of {', '.join(GRAD_SYNCS)}, got {grad_sync!r}")
    if not world.active or grad_sync == "allreduce":
        return net
    from torch.nn.parallel import DistributedDataParallel

    import inspect
    import warnings

    ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
    # no buffer sync in the forward (see broadcast_buffers); torch >= 2.13 renamed the switch
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else "broadcast_buffers")
    # the supernet runs channels-last, so a 1x1 conv's gradient arrives channels-last and DDP
    # copies it into its bucket: a warning per parameter, a cost the DDP benchmark includes
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True, **{sync: False})
