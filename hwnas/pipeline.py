"""The whole chain on one run folder: profile -> predictor -> search -> export.

Why a library function and not just a CLI script: ``hwnas demo`` (README command one) and its
end-to-end test both call :func:`run_pipeline`, so the test exercises exactly what a newcomer
runs.  Each stage calls the same library entry point as its own command (``run_campaign``,
``train_predictor``, ``run_search``, ``export_arch``), and everything it writes stays in one
run folder::

    RUN/latency.db      the latency store (with ``quick``: the shipped CSV is read, and only the
                        ``adapt_archs`` archs measured here to adapt its predictor are stored)
    RUN/predictor.hwp   the latency predictor, with its held-out metrics (``quick``: adapted to
                        this machine; RUN/base_predictor.hwp is the one the shipped data trained)
    RUN/search/         the search run (config, log, checkpoint, supernet, result, plot)
    RUN/measured_pick.json  the candidates timed here before training, and which one ships
    RUN/model.onnx      the exported, verified model, and RUN/model.json its model card
    RUN/summary.json    one record of every stage: what it produced and how long it took

A run folder is resumable: profiling skips archs already stored, and the search continues
from its checkpoint (``resume=True``).

Under ``torchrun --nproc-per-node N -m hwnas demo`` the same function runs on every rank:
rank 0 alone profiles, trains (and adapts) the predictor, sets the budget and exports, while
the others wait in a collective (``hwnas.distributed.agree``: an error on rank 0 ends every
rank with that one error); all N ranks train the search's supernet together (DDP, see
``hwnas.search``).  The ranks read the predictor rank 0 wrote, so the run folder must be one
they all see: one machine, or ``--out`` on a shared disk (checked before the search).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hwnas import jsonutil
from hwnas.errors import HwnasError, SearchError
from hwnas.profiling.canary import CALIBRATION_SESSIONS
from hwnas.space import DATA_DIR

log = logging.getLogger(__name__)

SHIPPED_LATENCIES = {"tiny": DATA_DIR / "latency" / "tiny_cpu.csv"}
STAGES = ("profile", "predictor", "budget", "search", "pick", "export")
ADAPT_MIN = 5  # fewest local archs worth adapting from (hwnas.predictors._adapt needs 3)
# under torchrun the other ranks wait in one collective while rank 0 profiles (a 300-arch
# campaign takes minutes here; thousands of archs take hours)
RANK_WAIT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one end-to-end run (saved as ``RUN/pipeline.json``)."""

    out: str
    space: str = "tiny"
    dataset: str = "digits"
    seed: int = 0
    quick: bool = False  # use the shipped latency dataset instead of profiling
    adapt_archs: int = 20  # quick: measure this many archs here and adapt the shipped data's predictor (0: don't)
    num_archs: int = 300  # archs to profile
    warmup: int = 10
    runs: int = 50
    calibration_sessions: int = CALIBRATION_SESSIONS  # the canary's calibration block (a new run's first campaign)
    predictor_model: str = "mlp"  # the search's differentiable-ready default
    latency_budget_ms: float | None = None  # None: the budget_quantile of the measured latencies
    budget_quantile: float = 0.3
    # the search's pick must meet the budget with this probability under the predictor's
    # uncertainty (``SearchConfig.budget_quantile``); None: its median prediction.  Why: the
    # search pushes its pick right up to the budget, so a median prediction a few percent under
    # it ended "over budget" in 2 of 10 demo runs (benchmarks/results/demo.md)
    budget_confidence: float | None = 0.9
    strategy: str = "fpnas"
    penalty: str = "hinge"
    search_epochs: int = 6
    export_epochs: int = 5
    # before training, time up to this many candidates and ship the first that measures 5% under
    # the budget (``hwnas.measured_pick``; 0: the search's pick as predicted).  Why: a fresh
    # clone's demo ended over budget with its pick predicted 8% under it (README, "The main job")
    measured_pick: int = 8
    from_supernet: bool = False
    limit: int | None = None  # use only this many images of the dataset (tests, quick looks)
    threads: int = 1  # torch threads: one is fastest on a small shared CPU
    device: str = "cpu"  # where the search's supernet trains (cuda: one GPU per torchrun rank)
    batch_size: int = 64  # the search's batch of one step, over all torchrun ranks
    resume: bool = False

    def __post_init__(self):
        if not 0.0 < self.budget_quantile < 1.0:
            raise SearchError(f"budget_quantile must be in (0, 1), got {self.budget_quantile}")
        if self.budget_confidence is not None and not 0.0 < self.budget_confidence < 1.0:
            raise SearchError(f"budget_confidence must be in (0, 1) or None, got {self.budget_confidence}")
        if self.num_archs < 10 and not self.quick:
            raise SearchError(f"num_archs must be >= 10 to train a predictor, got {self.num_archs}")
        if self.adapt_archs != 0 and self.adapt_archs < ADAPT_MIN:
            raise SearchError(f"adapt_archs must be 0 (no adaptation) or >= {ADAPT_MIN}, got {self.adapt_archs}")
        if self.device not in ("cpu", "cuda"):
            raise SearchError(f"device must be cpu or cuda, got {self.device!r}")
        if self.batch_size < 1:
            raise SearchError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.measured_pick < 0:
            raise SearchError(f"measured_pick must be >= 0 (candidates timed before training), got {self.measured_pick}")


@dataclass
class PipelineResult:
    """What every stage produced; ``to_dict()`` is ``RUN/summary.json``."""

    out: str
    space: str
    latency_source: str = ""
    archs_measured: int = 0
    latency_range_ms: tuple[float, float] | None = None
    predictor_metrics: dict = field(default_factory=dict)
    latency_budget_ms: float | None = None
    budget_source: str = ""
    arch: str | None = None
    predicted_latency_ms: float | None = None
    measured_latency_ms: float | None = None
    within_budget: bool | None = None
    supernet_val_acc: float | None = None
    accuracy: float | None = None
    onnx_accuracy: float | None = None
    parity_max_abs_diff: float | None = None
    flops: int | None = None
    params: int | None = None
    archs_sampled: int | None = None
    onnx_path: str | None = None
    latency_device: str | None = None  # the device the latency data describe
    measured_reference: str | None = None  # where the final measurement's canary reference came from
    measured_steal_share: float | None = None  # CPU steal while the final check ran (hwnas.profiling.steal)
    measured_gamma: float | None = None  # the state constant the final check's ratios were decompressed with
    measured_pick: dict | None = None  # the candidates timed before training (``hwnas.measured_pick``)
    canary_vs_data: float | None = None  # this machine's canary / the data's canary reference (--quick)
    adapted: dict | None = None  # quick: the shipped data's predictor adapted here (archs, LOO metrics, base)
    budget_confidence: float | None = None  # the search's pick met the budget at this predictive quantile
    world_size: int = 1  # torchrun ranks that trained the supernet
    stage_seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Hooks = dict[str, Callable]  # stage name -> progress callback handed to that stage's library call


def run_pipeline(config: PipelineConfig, *, hooks: Hooks | None = None,
                 on_stage: Callable[[str, str], None] | None = None) -> PipelineResult:
    """Run every stage in order; ``on_stage(stage, message)`` reports each finished stage.

    torch runs with ``config.threads`` threads meanwhile (one is fastest for these small
    convolutions on a shared CPU) and gets its own setting back afterwards.  Under torchrun
    every rank calls this and gets the same result; only rank 0 reports (hooks, on_stage)."""
    from hwnas.distributed import process_group
    from hwnas.torch_threads import torch_threads

    with torch_threads(max(1, int(config.threads))), process_group(config.device, RANK_WAIT) as world:
        if not world.is_main:
            hooks, on_stage = {}, (lambda stage, msg: None)
        return _run_stages(config, hooks or {}, on_stage or (lambda stage, msg: log.info("%s: %s", stage, msg)),
                           world)


def _timed(res: PipelineResult, stage: str, fn):
    t0 = time.perf_counter()
    value = fn()
    res.stage_seconds[stage] = round(time.perf_counter() - t0, 2)
    return value


def _run_stages(config: PipelineConfig, hooks: Hooks, say: Callable[[str, str], None], world) -> PipelineResult:
    from hwnas.distributed import agree, check_batch

    agree(world, lambda: check_batch(config.batch_size, world))  # before rank 0 spends minutes profiling
    res = agree(world, lambda: _before_search(config, hooks, say), main_only=True)
    out = Path(res.out)
    agree(world, lambda: _check_visible(out, world))
    res.world_size = world.size
    search = _timed(res, "search", lambda: _search(config, out, res.latency_budget_ms, hooks.get("search")))
    res.arch, res.predicted_latency_ms = search.arch, search.predicted_latency_ms
    res.supernet_val_acc, res.archs_sampled = search.supernet_val_acc, search.archs_sampled
    say("search", f"{search.arch}: predicted {search.predicted_latency_ms:.4f} ms, {search.archs_sampled} archs "
                  f"sampled, supernet val acc {search.supernet_val_acc:.3f}"
                  + (f" ({world.size} ranks)" if world.active else ""))
    return agree(world, lambda: _export_stage(config, out, hooks, say, res), main_only=True)


def _before_search(config: PipelineConfig, hooks: Hooks, say: Callable[[str, str], None]) -> PipelineResult:
    """Profile (or read the shipped data), train and adapt the predictor, set the budget."""
    out = _prepare_out(config)
    res = PipelineResult(out=str(out), space=config.space)
    data = _timed(res, "profile", lambda: _profile(config, out, hooks.get("profile")))
    res.latency_source, res.archs_measured = data.source, len(data)
    res.latency_range_ms = (float(data.latency_ms.min()), float(data.latency_ms.max()))
    say("profile", f"{len(data)} archs, {res.latency_range_ms[0]:.3f}-{res.latency_range_ms[1]:.3f} ms "
                   f"({data.source}{_state_note(data)})")
    res.latency_device = data.device_name or data.device_id
    if config.quick:
        res.canary_vs_data = _canary_vs_data(data)
        say("device", _describe_quick(data, res.canary_vs_data))

    report = _timed(res, "predictor", lambda: _train_predictor(config, out, data))
    res.predictor_metrics = report["test_metrics"]
    m = res.predictor_metrics
    say("predictor", f"{report['model']}: held-out within 10% {100 * m['within_10']:.1f}%, "
                     f"MAPE {100 * m['mape']:.1f}%, Kendall tau {m['kendall_tau']:.3f} ({report['n_test']} archs)")
    adapted = None
    if config.quick and config.adapt_archs:
        adapted = _timed(res, "adapt", lambda: _adapt(config, out, hooks.get("adapt")))
        loo = adapted.metrics_["loo"]
        res.adapted = {"archs": adapted.metrics_["n_target"], "loo_metrics": loo, "device": adapted.device_name,
                       "base_device": data.device_name or data.device_id}
        res.latency_device = adapted.device_name or adapted.device_id
        say("adapt", f"measured {res.adapted['archs']} archs here and adapted the shipped data's predictor to "
                     f"this machine: leave-one-out within 10% {100 * loo['within_10']:.0f}%, "
                     f"Spearman rho {loo['spearman_rho']:.3f}")

    res.latency_budget_ms, res.budget_source = _budget(config, data, adapted)
    res.budget_confidence = config.budget_confidence
    say("budget", f"{res.latency_budget_ms:.4f} ms ({res.budget_source})")
    return res


def _check_visible(out: Path, world) -> None:
    """Every rank must read the predictor rank 0 just wrote (and share the search's folder)."""
    if not (out / "predictor.hwp").is_file():
        raise HwnasError(f"rank {world.rank} cannot see {str(out / 'predictor.hwp')!r}, which rank 0 wrote: run "
                         "the torchrun demo on one machine, or give --out a folder on a disk every node shares")


def _export_stage(config: PipelineConfig, out: Path, hooks: Hooks, say: Callable[[str, str], None],
                  res: PipelineResult) -> PipelineResult:
    """Time the pick (and the next candidates when it measures over), train, export and
    measure the chosen one; write RUN/summary.json."""
    pareto_index = None
    if config.measured_pick:
        res.measured_pick = _timed(res, "pick", lambda: _measured_pick(config, out))
        chosen = res.measured_pick["measured"][res.measured_pick["chosen"]]
        pareto_index = chosen["pareto_index"]
        if pareto_index is not None:
            res.arch, res.predicted_latency_ms = chosen["arch"], chosen["predicted_ms"]
        say("pick", f"timed {len(res.measured_pick['measured'])} candidate(s) here: {res.measured_pick['reason']}"
                    + (f"; shipping {chosen['arch']} (predicted {chosen['predicted_ms']:.4f} ms)"
                       if pareto_index is not None else ""))
    exported = _timed(res, "export", lambda: _export(config, out, hooks.get("export"), pareto_index))
    res.measured_latency_ms, res.within_budget = exported.measured_latency_ms, exported.within_budget
    res.accuracy, res.flops, res.params = exported.accuracy, exported.flops, exported.params
    res.onnx_accuracy = exported.parity.onnx_accuracy
    res.parity_max_abs_diff = exported.parity.max_abs_diff
    res.onnx_path = str(exported.onnx_path)
    res.measured_reference = (exported.latency or {}).get("reference_source")
    res.measured_steal_share = (exported.latency or {}).get("steal_share")
    res.measured_gamma = (exported.latency or {}).get("gamma")
    say("export", f"{exported.onnx_path}: accuracy {exported.accuracy:.3f}, measured "
                  f"{exported.measured_latency_ms:.4f} ms")
    (out / "summary.json").write_text(jsonutil.dumps(res.to_dict(), indent=2) + "\n")
    return res


def _state_note(data) -> str:
    """The data's state constant, when its calibration learned one (``hwnas.profiling.contention``)."""
    from hwnas.profiling.contention import gamma_of

    gamma = gamma_of((data.fingerprint or {}).get("canary"))
    return f"; ratios decompressed by the state constant {gamma:.2f}" if gamma else ""


def _canary_vs_data(data) -> float | None:
    """This machine's canary latency over the reference that the data's device measured
    (None when the data carry no canary): how far this machine is from theirs."""
    from hwnas.errors import ProfilingError
    from hwnas.profiling.canary import rebuild_stored
    from hwnas.profiling.protocol import reference_for

    theirs = (data.fingerprint or {}).get("canary")
    if not theirs:
        return None
    try:
        canary = rebuild_stored(theirs)
    except ProfilingError as e:
        log.warning("cannot compare this machine with the data's: %s", e)
        return None
    here = reference_for(canary, None, warn=False)
    return here.reference_ms / float(theirs["reference_ms"])


def _describe_quick(data, factor: float | None) -> str:
    from hwnas.profiling.fingerprint import device_fingerprint, hardware_diff

    fp = data.fingerprint or {}
    who = data.device_name or fp.get("cpu_model") or "an unnamed device"
    when = ((fp.get("canary") or {}).get("created") or "")[:10]
    other = "another machine" if hardware_diff(fp, device_fingerprint("cpu")) else "this machine's hardware"
    msg = f"shipped latencies describe {who} ({other}{', measured ' + when if when else ''})"
    if factor is None:
        return msg + "; they carry no canary, so how far this machine is from it is unknown"
    return msg + f"; this machine's canary runs {factor:.2f}x theirs"


def default_out(root: str | Path = "runs") -> str:
    """``runs/demo-<date>-<time>``, creating ``runs/`` (a fresh clone has none)."""
    Path(root).mkdir(exist_ok=True)
    return str(Path(root) / time.strftime("demo-%Y%m%d-%H%M%S"))


def _prepare_out(config: PipelineConfig) -> Path:
    out = Path(config.out)
    if not out.parent.is_dir():
        raise HwnasError(f"the parent folder of the run folder does not exist: {str(out.parent)!r}")
    saved = out / "pipeline.json"
    if out.exists() and any(out.iterdir()):
        if not config.resume:
            raise HwnasError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose "
                             "another --out")
        if saved.is_file():
            try:
                before = json.loads(saved.read_text())
            except ValueError:
                raise HwnasError(f"{str(saved)!r} is not valid JSON; it is not a run folder this version can "
                                 "resume (choose another --out)") from None
            now = dataclasses.asdict(config)
            default = {f.name: f.default for f in dataclasses.fields(config)}  # a setting newer than the run
            diff = [k for k in now if k not in ("resume", "out") and before.get(k, default[k]) != now[k]]
            if diff:
                raise HwnasError(f"cannot resume {str(out)!r}: settings differ from the saved run: "
                                 + ", ".join(f"{k}={now[k]!r} (was {before.get(k)!r})" for k in diff))
    out.mkdir(exist_ok=True)
    saved.write_text(jsonutil.dumps(config, indent=2) + "\n")
    return out


def _profile(config: PipelineConfig, out: Path, on_row):
    from hwnas.predictors import read_latency_csv
    from hwnas.space import get_space

    space = get_space(config.space)
    if config.quick:
        shipped = SHIPPED_LATENCIES.get(space.name)
        if shipped is None:
            raise HwnasError(f"no shipped latency dataset for space {space.name!r}; valid with --quick: "
                             f"{', '.join(SHIPPED_LATENCIES)}")
        return read_latency_csv(shipped, space)
    return _measure_here(config, out / "latency.db", config.num_archs, on_row)


def _measure_here(config: PipelineConfig, db: Path, num_archs: int, on_row):
    """``num_archs`` archs of the space measured on this machine into ``db`` (a resumed run
    tops up to that many), as ``LatencyData``."""
    from hwnas.predictors import load_store_data
    from hwnas.profiling.campaign import CampaignConfig, campaign_device, run_campaign
    from hwnas.profiling.store import LatencyStore
    from hwnas.space import get_space

    space = get_space(config.space)
    cfg = CampaignConfig(space=space.name, num_archs=num_archs, warmup=config.warmup, runs=config.runs,
                         calibration_sessions=config.calibration_sessions, seed=config.seed)
    with LatencyStore(db) as store:
        # a campaign asked again adds N *new* archs; a resumed run only tops up to num_archs
        have = store.measured_archs(campaign_device(cfg)["device_id"], space.name, batch=cfg.batch_size,
                                    precision=cfg.precision, ep=cfg.ep)
        if len(have) < num_archs:
            run_campaign(store, dataclasses.replace(cfg, num_archs=num_archs - len(have)), on_row=on_row)
    return load_store_data(db, space)


def _train_predictor(config: PipelineConfig, out: Path, data) -> dict:
    from hwnas.predictors import train_predictor
    from hwnas.space import get_space

    pred, report = train_predictor(data, get_space(config.space), config.predictor_model, seed=config.seed)
    pred.save(out / "predictor.hwp")
    return report


def _adapt(config: PipelineConfig, out: Path, on_row):
    """Measure ``adapt_archs`` archs on this machine (paired canary protocol, into
    RUN/latency.db, resumable) and adapt the shipped data's predictor to them: the shipped
    latencies describe another machine (``hwnas.predictors._adapt``).  The base is kept as
    RUN/base_predictor.hwp; RUN/predictor.hwp becomes the adapted one, with this machine's
    fingerprint, which is what the search and the export's final check then use."""
    from hwnas.predictors import adapt_predictor, load_predictor
    from hwnas.space import get_space

    space = get_space(config.space)
    base_path, pred_path = out / "base_predictor.hwp", out / "predictor.hwp"
    if not base_path.exists():
        pred_path.replace(base_path)
    local = _measure_here(config, out / "latency.db", config.adapt_archs, on_row)
    adapted = adapt_predictor(load_predictor(base_path, space=space), local, seed=config.seed)
    adapted.save(pred_path)
    return adapted


def _budget(config: PipelineConfig, data, adapted=None) -> tuple[float, str]:
    """The user's budget, or a quantile of what was measured: tight enough to bind, loose
    enough that many archs meet it.  With an adapted predictor the shipped archs' latencies
    *as predicted for this machine* stand in for the measured ones (theirs describe another)."""
    if config.latency_budget_ms is not None:
        return float(config.latency_budget_ms), "given"
    q = config.budget_quantile
    if adapted is not None:
        lat = adapted.predict(list(data.archs))
        return float(np.quantile(lat, q)), (f"{100 * q:.0f}th percentile of the shipped archs' latencies as "
                                            "predicted for this machine")
    return float(np.quantile(data.latency_ms, q)), f"{100 * q:.0f}th percentile of the measured latencies"


def _search(config: PipelineConfig, out: Path, budget_ms: float, progress):
    from hwnas.search import SearchConfig, run_search

    search_dir = out / "search"
    cfg = SearchConfig(space=config.space, strategy=config.strategy, dataset=config.dataset,
                       epochs=config.search_epochs, seed=config.seed, out=str(search_dir),
                       latency_budget_ms=budget_ms, penalty=config.penalty, predictor=str(out / "predictor.hwp"),
                       budget_quantile=config.budget_confidence,
                       limit=config.limit, threads=config.threads, device=config.device,
                       batch_size=config.batch_size,
                       resume=config.resume and (search_dir / "checkpoint.pt").exists())
    if cfg.resume and (search_dir / "result.json").exists():
        from hwnas.search import SearchResult

        return SearchResult(**json.loads((search_dir / "result.json").read_text()))
    return run_search(cfg, progress=progress)


def _measured_pick(config: PipelineConfig, out: Path) -> dict:
    """``hwnas.measured_pick`` on the search run, kept in RUN/measured_pick.json: a resumed run
    reuses it, so that it ships what it chose the first time."""
    from hwnas.export import read_run
    from hwnas.measured_pick import measured_pick

    path = out / "measured_pick.json"
    if config.resume and path.is_file():
        return json.loads(path.read_text())
    report = measured_pick(read_run(out / "search"), out / "search", config.measured_pick).to_dict()
    path.write_text(jsonutil.dumps(report, indent=2) + "\n")
    return report


def _export(config: PipelineConfig, out: Path, progress, pareto_index: int | None = None):
    from hwnas.export import ExportConfig, export_arch

    cfg = ExportConfig(out=out / "model.onnx", run_dir=out / "search", epochs=config.export_epochs,
                       from_supernet=config.from_supernet, train_threads=config.threads, seed=config.seed,
                       overwrite=config.resume, pareto_index=pareto_index)
    return export_arch(cfg, progress=progress)
