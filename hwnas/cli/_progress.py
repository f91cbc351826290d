"""rich progress bars for the long-running stages, shared by their commands and ``hwnas demo``.

Each bar is a context manager whose method (or ``__call__``) is the progress callback the
library function of that stage takes, so the library never imports rich.
"""
from __future__ import annotations

from abc import ABC, abstractmethod


class _Bar(ABC):
    """A context manager that stops its display on exit, whatever happened."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @abstractmethod
    def stop(self):
        """End the live display (idempotent)."""


class CampaignBar(_Bar):
    """rich progress bar: count, ETA and archs per minute."""

    def __init__(self, total, label="archs"):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.p = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]:.1f}/min"), TimeElapsedColumn(),
                          TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"))
        self.task = self.p.add_task(label, total=total, rate=0.0, last="")

    def stop(self):
        self.p.stop()

    def row(self, row, res):
        self.p.start()  # at the first row: idempotent, and no empty bar before work starts
        t = self.p.tasks[0]
        if t.total is None:
            self.p.update(self.task, total=res.planned)
        if res.skipped and t.completed == 0:
            self.p.update(self.task, completed=res.skipped)
        rate = 60.0 * (t.completed + 1 - res.skipped) / max(t.elapsed or 1e-9, 1e-9)
        last = f"{row['latency_ms']:.3f} ms" if row["status"] == "ok" else "[red]error"
        if row.get("calibrated") and res.canary:
            last += f"  speed x{row['canary_median_ms'] / res.canary['reference_ms']:.2f}"
        self.p.update(self.task, advance=1, rate=rate, last=last)

    def calibrate(self, done, total):
        """The canary's calibration block (first campaign of a device only)."""
        self.p.start()
        self.p.update(self.task, last=f"calibrating the canary: session {done}/{total}")

    def layer(self, done, total):
        self.p.start()
        elapsed = self.p.tasks[0].elapsed or 1e-9
        self.p.update(self.task, total=total, completed=done, rate=60.0 * done / elapsed, last="")


class ExportBar(_Bar):
    """A rich progress bar over training steps, plus one line per other stage (stderr).

    The bar is started at the first training step and stopped when training ends, so an
    error before training prints nothing but its own line."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.progress = self.task = None

    def stop(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __call__(self, ev):
        if ev.stage != "train":
            self.stop()
            self.console.print(f"[dim]{ev.stage:>8}[/] {ev.message}")
            return
        p = ev.train
        if self.task is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("training", total=p.total_steps, info="")
        info = f"epoch {p.epoch}/{p.epochs} loss {p.loss:.3f}"
        if p.stats is not None:
            s = p.stats
            info += f" val acc {s.val_acc:.3f}"
            self.progress.console.print(f"   epoch {p.epoch}/{p.epochs}: train loss {s.train_loss:.4f} acc "
                                        f"{s.train_acc:.3f}, val loss {s.val_loss:.4f} acc {s.val_acc:.4f}")
        if self.progress is not None:
            self.progress.update(self.task, completed=p.step, info=info)


class SearchBar(_Bar):
    """Supernet steps of a search (warm-up, then search), with entropy, K and archs sampled."""

    def __init__(self, epochs: int, strategy: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs = epochs
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"))
        self.task = self.bar.add_task(f"{strategy} search", total=None, info="")

    def stop(self):
        self.bar.stop()

    def __call__(self, ev: dict) -> None:
        """The ``progress`` callback of ``hwnas.search.run_search``."""
        self.bar.start()  # started at the first event, so stages before the search draw no empty bar
        spe = ev.get("steps_per_epoch")
        if spe is not None:
            self.bar.update(self.task, total=spe * self.epochs, completed=ev["epoch"] * spe + ev["batch"] + 1)
        if ev["stage"] in ("warmup", "train"):
            what = "warm-up" if ev["stage"] == "warmup" else "uniform paths"
            self.bar.update(self.task, info=f"{what}  loss {ev['train_loss']:.3f}")
        elif ev["stage"] == "search":
            ent = "-" if ev.get("entropy") is None else f"{ev['entropy']:.2f}"
            self.bar.update(self.task, info=f"H {ent}  K {ev['k']}  archs {ev['archs_sampled']}  "
                                            f"acc {ev['acc']:.3f}  {ev['phase']}")
