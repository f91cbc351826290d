"""A run folder's files: ``config.json``/``result.json`` (written atomically), ``log.jsonl``
(one line per strategy step) and its plot ``search.png``.

Why its own module: reading a run back (``read_log``) is public API that the benchmarks and
``hwnas export`` use without running anything, and the log's rules (cut back to the last
checkpoint on resume, so no step appears twice) belong in one place.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hwnas import jsonutil


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(jsonutil.dumps(obj, indent=2))
    tmp.replace(path)


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after ``last_step`` (steps of an epoch that was interrupted)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if rec.get("step", 0) <= last_step:
            keep.append(line)
    path.write_text("".join(s + "\n" for s in keep))


def read_log(path: str | Path) -> list[dict]:
    """The per-step records of a run's ``log.jsonl``."""
    return [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]


def plot_log(records: list[dict], path: str | Path, title: str = "") -> None:
    """Entropy, expected cost and sampled-arch accuracy per step (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    series = [("entropy", "entropy (nats)"), ("expected_cost", "expected cost"), ("acc", "val acc (sampled)")]
    for ax, (key, label) in zip(axes, series):
        ys = [r.get(key) for r in records]
        if any(v is not None for v in ys):
            ax.plot(steps, [np.nan if v is None else v for v in ys])
        if key == "expected_cost" and all(v is None for v in ys):  # no expected cost: sample mean
            ys = [r.get("mean_cost") for r in records]
            if any(v is not None for v in ys):
                ax.plot(steps, [np.nan if v is None else v for v in ys])
        if key == "expected_cost" and records and records[-1].get("budget") is not None:
            ax.axhline(records[-1]["budget"], color="r", ls="--", lw=1, label="budget")
            ax.legend(loc="best")
        if key == "expected_cost" and records:
            label = f"expected {records[-1].get('cost_kind', 'cost')}"
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("search step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
