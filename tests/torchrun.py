"""Launch ``torchrun --standalone`` (a free rendezvous port per launch) from a test.

Each rank gets one OpenMP thread: two ranks on a 2-core machine with a thread pool each
would oversubscribe it, and the runs compared in tests are single-threaded anyway."""
from __future__ import annotations

import os
import subprocess
import sys


def torchrun(n: int, args: list[str], *, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node N ARGS``, output captured."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
