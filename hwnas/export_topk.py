"""``hwnas export --top-k K``: train a run's K best candidates (in-process or as Ray tasks),
card each, and pick the one to ship.

Why a driver around ``export_arch``: each candidate is exactly one ordinary export (same
training, parity check and latency measurement, same model card), so the unit of work is
``export_arch`` itself and K of them are embarrassingly parallel (DESIGN.md, "Scaling
out").  With ``--ray`` each is one Ray task reserving what it uses (``num_cpus`` = the
larger of ``--threads`` and ``--train-threads`` on the CPU provider, one GPU on a GPU
provider, plus ``--ray-resource NAME`` when given); without it the same function runs
the candidates one after another here, so the feature works without a cluster and both
paths write the same files.

Workers need not share a file system with the driver: the run files a candidate needs
(result.json, config.json, pareto.json, supernet.pt with ``--from-supernet``, the
predictor) travel with the task, the task exports into a temporary folder and returns
the ONNX bytes and the model card, and the driver writes them, with the paths in the card
rewritten to the driver's (``_relocate``).  A dataset folder (``cifar10:DIR``) must exist
on every worker; the embedded digits need nothing.  The latency in each card is measured
on the worker that trained the candidate (its fingerprint is in the card): on a mixed
cluster, pin the candidates to one kind of device with ``--ray-resource``.

Outputs, in ``OUT`` (a folder): ``cand-<rank>-<arch slug>/model.onnx`` and ``model.json``
per candidate (rank 0 = best supernet accuracy) as each finishes, then ``candidates.json``
last: every candidate's accuracy, latency, budget status and which one was picked
(``hwnas.export_candidates.pick_best``).  A stale candidates.json is removed before the
first candidate starts, so the file exists only for a complete set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hwnas import __version__, jsonutil
from hwnas.errors import ExportError, HwnasError
from hwnas.export import ExportConfig, ExportResult, _check_config, export_arch, read_run
from hwnas.export_candidates import meets_budget, pick_best, top_candidates

log = logging.getLogger(__name__)

__all__ = ["SUMMARY_NAME", "CandidateJob", "TopKResult", "export_top_k", "train_candidate"]

SUMMARY_NAME = "candidates.json"
SUMMARY_SCHEMA = 1
PICK_RULE = ("most accurate stand-alone model (torch top-1, validation split) among those meeting their budget: "
             "measured median latency <= latency budget, FLOPs <= FLOPs budget; ties: lower measured latency")
_RUN_FILES = ("result.json", "config.json", "pareto.json")


@dataclass(frozen=True)
class CandidateJob:
    """One candidate's export: its rank, its output folder's name and its ``ExportConfig``
    (``out`` is the final ``OUT/<dirname>/model.onnx``; the task writes elsewhere)."""

    rank: int
    dirname: str
    config: ExportConfig


@dataclass(frozen=True)
class TopKResult:
    out_dir: str
    summary_path: str
    summary: dict  # candidates.json
    results: tuple  # ExportResult | None per candidate, in rank order

    @property
    def picked(self) -> int | None:
        return self.summary["picked"]

    def to_dict(self) -> dict:
        return self.summary


def _slug(arch: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", arch)
    return s if len(s) <= limit else f"{s[:limit - 8]}-{hashlib.sha1(arch.encode()).hexdigest()[:7]}"


def _relocate(obj, mapping: dict[str, str]):
    """``obj`` (JSON-like) with every string path under a key of ``mapping`` moved to its value."""
    if isinstance(obj, dict):
        return {k: _relocate(v, mapping) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_relocate(v, mapping) for v in obj)
    if isinstance(obj, str):
        for src, dst in mapping.items():
            if obj == src or obj.startswith(src + os.sep):
                return dst + obj[len(src):]
    return obj


# --------------------------------------------------------------------------- the unit of work
def _materialize(job: CandidateJob, files: dict, tmp: Path) -> tuple[ExportConfig, dict]:
    """The shipped run files written under ``tmp``: (the job's config pointing there, the
    temporary path -> original path mapping)."""
    cfg, mapping = job.config, {}
    run = tmp / "run"
    run.mkdir()
    for name, data in files["run"].items():
        (run / name).write_bytes(data)
    mapping[str(run)] = str(cfg.run_dir)
    if files.get("run_predictor") is not None:  # result.json's predictor, shipped: point the copy at it
        orig, data = files["run_predictor"]
        p = tmp / "run-predictor.hwp"
        p.write_bytes(data)
        result = json.loads((run / "result.json").read_text())
        result["predictor"] = str(p)
        (run / "result.json").write_text(json.dumps(result))
        mapping[str(p)] = orig
    predictor = cfg.predictor
    if files.get("predictor") is not None:
        orig, data = files["predictor"]
        predictor = tmp / "predictor.hwp"
        predictor.write_bytes(data)
        mapping[str(predictor)] = orig
    return dataclasses.replace(cfg, run_dir=run, predictor=predictor), mapping


def train_candidate(job: CandidateJob, files: dict | None = None, in_ray: bool = False) -> dict:
    """Export one candidate into a temporary folder and return what the driver writes:
    ``{"result": ExportResult, "onnx": bytes, "card": str, "worker": {...}}``, or
    ``{"error": message, "worker": {...}}`` for an ``HwnasError`` (a parity failure, a
    provider that does not load), so one bad candidate never loses the others.

    ``files`` (from ``_pack_run``): the run's files, when the run folder may not exist
    here (a Ray worker on another machine); None reads ``job.config.run_dir`` directly."""
    import platform

    worker = {"hostname": platform.node(), "pid": os.getpid()}
    if in_ray:
        from hwnas.ray_cluster import worker_info

        worker = worker_info()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnas-cand-") as tmp:
        tmp = Path(tmp)
        cfg, mapping = (job.config, {}) if files is None else _materialize(job, files, tmp)
        out = tmp / "out"
        out.mkdir()
        final_onnx = Path(job.config.out)
        mapping[str(out / final_onnx.name)] = str(final_onnx)
        mapping[str(out / final_onnx.with_suffix(".json").name)] = str(final_onnx.with_suffix(".json"))
        try:
            r = export_arch(dataclasses.replace(cfg, out=out / final_onnx.name))
        except HwnasError as e:
            return {"error": f"{type(e).__name__}: {e}", "worker": worker, "wall_time_s": time.perf_counter() - t0}
        card = _relocate(r.card, mapping)
        result = dataclasses.replace(r, onnx_path=str(final_onnx), card_path=str(final_onnx.with_suffix(".json")),
                                     card=card)
        return {"result": result, "onnx": Path(r.onnx_path).read_bytes(), "card": jsonutil.dumps(card, indent=2) + "\n",
                "worker": worker, "wall_time_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- the driver
def _pack_run(cfg: ExportConfig, run: dict) -> dict:
    """The files a candidate needs from the run folder (and the predictors), as bytes."""
    run_dir = Path(cfg.run_dir)
    names = _RUN_FILES + (("supernet.pt",) if cfg.from_supernet else ())
    files = {"run": {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()},
             "run_predictor": None, "predictor": None}
    pred = run.get("predictor")
    if cfg.predictor is None and pred and Path(pred).is_file():
        files["run_predictor"] = (pred, Path(pred).read_bytes())
    if cfg.predictor is not None:
        files["predictor"] = (str(cfg.predictor), Path(cfg.predictor).read_bytes())
    return files


def _check(config: ExportConfig) -> dict:
    """Everything checkable before any work: a ``hwnas search`` run, no single-pick options."""
    _check_config(config)
    if config.run_dir is None or config.arch is not None:
        raise ExportError("--top-k trains candidates of a search run: give --run (and no --arch)")
    if config.budget is not None or config.pareto_index is not None or config.measured_pick:
        raise ExportError("--top-k chooses the candidates itself (and measures each); drop --budget / "
                          "--pareto-index / --measured-pick")
    if config.from_supernet and not (Path(config.run_dir) / "supernet.pt").is_file():
        raise ExportError(f"--from-supernet: {str(Path(config.run_dir) / 'supernet.pt')!r} does not exist")
    if config.predictor is not None and not Path(config.predictor).is_file():
        raise ExportError(f"predictor file {str(config.predictor)!r} does not exist")
    out = Path(config.out)
    if out.suffix.lower() == ".onnx":
        raise ExportError(f"with --top-k, --out is a folder (one subfolder per candidate); got {str(out)!r}")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {str(out)!r} exists and is not a folder")
    if not out.parent.is_dir():
        raise ExportError(f"the output's parent folder {str(out.parent)!r} does not exist; create it first")
    return read_run(config.run_dir)


def _record(job: CandidateJob, cand, got: dict, out_dir: Path) -> dict:
    rec = {"rank": job.rank, "dir": job.dirname, "arch": cand.arch, "supernet_acc": cand.supernet_acc,
           "predicted_cost": cand.cost, "budget": cand.budget, "status": "ok", "error": None}
    r: ExportResult | None = got.get("result")
    if r is None:
        rec.update(status="error", error=got["error"], accuracy=None, measured_latency_ms=None, meets_budget=None)
    else:
        rec.update(accuracy=r.accuracy, onnx_accuracy=r.parity.onnx_accuracy,
                   measured_latency_ms=r.measured_latency_ms, predicted_latency_ms=r.predicted_latency_ms,
                   latency_budget_ms=r.latency_budget_ms, within_budget=r.within_budget, flops=r.flops,
                   flops_budget=r.flops_budget, params=r.params, meets_budget=meets_budget(r),
                   device_id=(r.fingerprint or {}).get("device_id"),
                   onnx=str(Path(r.onnx_path).relative_to(out_dir)), card=str(Path(r.card_path).relative_to(out_dir)))
    rec.update(worker=got["worker"], wall_time_s=round(float(got["wall_time_s"]), 3))
    return rec


def _write(got: dict, job: CandidateJob) -> None:
    if got.get("result") is None:
        return
    folder = Path(job.config.out).parent
    folder.mkdir(exist_ok=True)
    Path(job.config.out).write_bytes(got["onnx"])
    Path(job.config.out).with_suffix(".json").write_text(got["card"])


def export_top_k(config: ExportConfig, top_k: int, *, ray_address: str | None = None, ray_resource: str | None = None,
                 on_candidate: Callable[[dict, int, int], None] | None = None) -> TopKResult:
    """Train, export and card the ``top_k`` best candidates of the run ``config.run_dir``
    (``hwnas.export_candidates``) into the folder ``config.out``, and pick the one to ship.

    ``config`` is the template every candidate's export starts from (epochs, provider,
    threads, ...); ``ray_address`` (auto | local | HOST:PORT) runs the candidates as Ray
    tasks, else one after another here; ``ray_resource`` restricts them to workers that
    advertise that custom resource.  ``on_candidate(record, done, total)`` as each one
    finishes.  Bad input (``--top-k`` out of range, a cluster that does not answer, a
    resource no worker has) raises before anything is trained or written.
    """
    t0 = time.perf_counter()
    if ray_resource is not None and ray_address is None:
        raise ExportError("--ray-resource NAME places candidates on Ray workers: give --ray auto|HOST:PORT too")
    config = dataclasses.replace(config, run_dir=Path(config.run_dir) if config.run_dir is not None else None)
    run = _check(config)
    cset, chosen = top_candidates(run, config.run_dir, top_k, latency_budget_ms=config.latency_budget_ms)
    out_dir = Path(config.out)
    jobs = []
    for c in chosen:
        dirname = f"cand-{c.rank}-{_slug(c.arch)}"
        jobs.append(CandidateJob(c.rank, dirname, dataclasses.replace(
            config, out=out_dir / dirname / "model.onnx", **c.export_overrides())))
    ray_info = None
    if ray_address is not None:  # connect and check the cluster before anything is written
        from hwnas.ray_cluster import connect, require_fit, require_resource, task_resources

        ray = connect(ray_address)
        if ray_resource is not None:
            require_resource(ray, ray_resource)
        resources = task_resources(config.ep, max(config.threads, config.train_threads or 1), resource=ray_resource)
        require_fit(ray, resources, f"a candidate (--ep {config.ep}, --threads/--train-threads)")
        ray_info = {"address": ray_address, "resource": ray_resource, "task_resources": resources}
    out_dir.mkdir(exist_ok=True)
    summary_path = out_dir / SUMMARY_NAME
    summary_path.unlink(missing_ok=True)  # it exists only for a complete set

    records: dict[int, dict] = {}
    results: dict[int, ExportResult | None] = {}
    by_rank = {c.rank: c for c in chosen}

    def handle(job: CandidateJob, got: dict) -> None:
        _write(got, job)
        rec = _record(job, by_rank[job.rank], got, out_dir)
        records[job.rank], results[job.rank] = rec, got.get("result")
        log.info("candidate %d (%s): %s", job.rank, job.dirname, rec["status"])
        if on_candidate is not None:
            on_candidate(rec, len(records), len(jobs))

    if ray_info is None:
        for job in jobs:
            handle(job, train_candidate(job))
    else:
        task = ray.remote(**resources)(train_candidate)
        files_ref = ray.put(_pack_run(config, run))  # one copy in the object store for all tasks
        pending = {task.remote(job, files_ref, True): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                handle(pending.pop(ref), ray.get(ref))

    ordered = [records[j.rank] for j in jobs]
    picked, reason = pick_best(ordered)
    summary = {
        "schema": SUMMARY_SCHEMA, "hwnas_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(config.run_dir), "space": run["space"], "source": cset.source, "selection": cset.describe(),
        "cost_kind": cset.cost_kind, "run_budget": cset.budget, "top_k": top_k, "available": len(cset.candidates),
        "backend": "ray" if ray_info else "local", "ray": ray_info, "pick_rule": PICK_RULE,
        "picked": picked, "reason": reason,
        "picked_dir": None if picked is None else ordered[picked]["dir"],
        "picked_arch": None if picked is None else ordered[picked]["arch"],
        "picked_onnx": None if picked is None else str(out_dir / ordered[picked]["onnx"]),
        "candidates": ordered, "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(jsonutil.dumps(summary, indent=2) + "\n")
    tmp.replace(summary_path)
    if all(r["status"] == "error" for r in ordered):
        raise ExportError(f"all {len(ordered)} candidates failed (see {summary_path}); the first: {ordered[0]['error']}")
    if picked is None:
        log.warning("no candidate was picked: %s (see %s)", reason, summary_path)
    return TopKResult(str(out_dir), str(summary_path), summary, tuple(results[j.rank] for j in jobs))
