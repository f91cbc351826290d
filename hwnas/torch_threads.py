"""Run a block with a set number of torch intra-op threads, and give the old count back.

Why one helper: training, search, export and the MLP predictor all pick their own thread
count (small convolutions and matrices on a shared 2-core machine ran 5-50x slower with 2
threads than with 1: the threads spin waiting for each other), and a library call must not
leave the caller's process with a different setting than it found.
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` inside the block; ``None`` (or 0) leaves torch's setting alone."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
