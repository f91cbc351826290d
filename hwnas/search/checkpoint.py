"""``checkpoint.pt``: what a run needs to continue exactly where it stopped.

Saved after every epoch (atomically, by rank 0): the supernet and its optimizer, the strategy's
state, the training sampler's state (GreedyNAS's pool and survivor queue, for example), the
warm-up generator, torch's RNG, the class curriculum's easy-first order (``curriculum.py``),
the step counter and the elapsed time.  Data order depends only
on ``(seed, epoch)``, so a resumed run sees the same batches as an uninterrupted one, and every
random draw of the strategy and the sampler comes from a generator in the checkpoint: the same
seed gives the same result whether or not the run was interrupted.

A kill in the search stage resumes from the last epoch's checkpoint and runs the whole stage
again; the stage is seeded, so its result is the same.
"""
from __future__ import annotations

from pathlib import Path

from hwnas import jsonutil
from hwnas.errors import SearchError
from hwnas.search.config import RESUMABLE, SearchConfig, field_default


def open_run(config: SearchConfig, out: Path | None) -> dict | None:
    """The checkpoint to resume from, if any; refuses a run folder that cannot be used as asked.

    A setting the checkpoint lacks was added to hwnas after the run started; the run used its
    default, so that is what the new config is compared with."""
    if out is None:
        return None
    ckpt_path = out / "checkpoint.pt"
    if config.resume and ckpt_path.exists():
        import torch

        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = checkpoint["config"]
        now = config.to_dict()
        was = {k: saved[k] if k in saved else field_default(k) for k in now}
        diff = [k for k, v in now.items()
                if k not in RESUMABLE and jsonutil.to_jsonable(was[k]) != jsonutil.to_jsonable(v)]
        if diff:
            raise SearchError(f"cannot resume {out}: settings differ from the checkpoint's: "
                              + ", ".join(f"{k}={now[k]!r} (was {was[k]!r})" for k in diff))
        return checkpoint
    if not config.resume and (ckpt_path.exists() or (out / "result.json").exists()):
        raise SearchError(f"{out} already holds a search run; pass --resume to continue it or choose another --out")
    return None


def save_checkpoint(path: Path, loop, warm_rng, epoch: int, step: int) -> None:
    """Write ``path`` atomically from the loop's state after ``epoch`` (0-based) has finished."""
    import torch

    torch.save({
        "config": loop.config.to_dict(), "epoch": epoch + 1, "step": step,
        "elapsed_s": loop.clock(), "world_size": loop.world.size,
        "supernet": loop.net.state_dict(), "optimizer": loop.optimizer.state_dict(),
        "strategy": loop.strategy.state_dict(), "train_sampler": loop.train_sampler.state_dict(),
        "warm_rng": warm_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "curriculum": None if getattr(loop, "curriculum", None) is None else loop.curriculum.state_dict(),
    }, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def restore_checkpoint(checkpoint: dict, net, optimizer, strategy, train_sampler, warm_rng,
                       curriculum=None) -> tuple[int, int, float]:
    """Load ``checkpoint`` into the run's pieces; returns ``(start epoch, step, elapsed seconds)``.

    A checkpoint written before training samplers had state holds none (its samplers,
    ``strategy`` and ``uniform``, keep theirs in the strategy and the warm-up generator).
    A class curriculum gets its easy-first order back (None if warm-up had not ended)."""
    import torch

    net.load_state_dict(checkpoint["supernet"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    strategy.load_state_dict(checkpoint["strategy"])
    if "train_sampler" in checkpoint:
        train_sampler.load_state_dict(checkpoint["train_sampler"])
    warm_rng.bit_generator.state = checkpoint["warm_rng"]
    if curriculum is not None and checkpoint.get("curriculum") is not None:
        curriculum.load_state_dict(checkpoint["curriculum"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return checkpoint["epoch"], checkpoint["step"], checkpoint["elapsed_s"]
