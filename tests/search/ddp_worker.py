"""What one rank of a torchrun launch runs in the DDP tests: a real search, plus a copy of this
rank's final supernet and distribution state (``rank<R>.pt``) and result (``result<R>.json``).

Usage: ``torchrun --standalone --nproc-per-node N tests/search/ddp_worker.py CONFIG_JSON DUMP_DIR``.
The capture wraps ``loop._final_result`` (it sees the run's state right before the final
pick); the search itself is not changed.
"""
import json
import os
import sys
from pathlib import Path

import torch

from hwnas.search import loop


def main(config_json: str, dump: str) -> None:
    if os.environ.get("HWNAS_TEST_FLOAT64"):  # exact comparisons: float32 BN gradients after a
        torch.set_default_dtype(torch.float64)  # depthwise conv differ by ~1% between two exact formulas
    config = loop.SearchConfig(**json.loads(config_json))
    dump_dir = Path(dump)
    final = loop._final_result

    def capture(run, *args, **kwargs):
        torch.save({"supernet": run.net.state_dict(), "strategy": run.strategy.state_dict()},
                   dump_dir / f"rank{run.world.rank}.pt")
        return final(run, *args, **kwargs)

    loop._final_result = capture
    result = loop.run_search(config)
    rank = int(os.environ.get("RANK", "0"))  # torchrun's
    (dump_dir / f"result{rank}.json").write_text(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
