"""Run a campaign's measurements as Ray tasks; rows stream back to the one SQLite writer.

Why Ray (DESIGN.md, "Scaling out"): measuring is embarrassingly parallel across devices.
Each task reserves what one measurement needs (``num_cpus=threads`` on CPU, one GPU for a
GPU provider), so Ray places at most one measurement per reserved core/GPU and a fleet
of machines each measures its own device.  The driver keeps a bounded window of tasks in
flight and commits each result as ``ray.wait`` returns it, so an interrupted campaign
keeps every finished row.

Repeats: a task measures its arch's ``repeats`` sessions back to back (``measure_arch``),
not spread over a chunk as the in-process campaign does: chunking would have to pin a
chunk to one worker and stream rows back per chunk, and with many workers the archs'
sessions already interleave with other tasks.  So on Ray the R sessions can fall into
one slow phase of a contended host; the minimum over them still removes the phases that
are shorter than one session.  With the canary (the default) each worker process keeps its
own session of the campaign's canary open (``campaign.worker_timer``) and times every arch
against it on its own device; the driver turns the ratios into latencies with the
reference it holds, so workers never need the store.

Caveat stated plainly: CPU tasks on one machine share caches and memory bandwidth, so
for the cleanest CPU numbers run one task per machine (``--threads`` = cores).
"""
from __future__ import annotations

import logging

from hwnas.errors import ProfilingError

logger = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ProfilingError("--ray needs Ray: pip install 'hwnas[distributed]'") from e
    return ray


def _measure_task(space_name: str, arch: str, cfg, canary) -> dict:
    from hwnas.profiling.campaign import measure_arch

    return measure_arch(space_name, arch, cfg, canary)


def run_on_ray(archs: list[str], cfg, record, *, address: str = "auto", stop=None, window: int | None = None,
               canary=None) -> None:
    """Measure ``archs`` on Ray workers and call ``record(row)`` in the driver for each
    result as it arrives.  Connects to ``address`` ('auto' = the running cluster, or a
    local one if none), unless Ray is already initialised."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False)
        except ConnectionError:
            if address != "auto":
                raise ProfilingError(f"cannot connect to the Ray cluster at {address!r}") from None
            ray.init(include_dashboard=False, log_to_driver=False)
    resources = {"num_gpus": 1, "num_cpus": 1} if cfg.ep != "cpu" else {"num_cpus": cfg.threads}
    task = ray.remote(**resources)(_measure_task)
    total = ray.cluster_resources()
    slots = int(total.get("GPU" if cfg.ep != "cpu" else "CPU", 1) // max(resources.get("num_cpus", 1), 1))
    window = window or max(2 * slots, 2)
    logger.info("ray: %s, up to %d tasks in flight", total, window)
    canary_ref = ray.put(canary)  # one copy of the canary's ONNX bytes in the object store
    pending, queue = [], list(archs)
    while queue or pending:
        while queue and len(pending) < window and not (stop and stop.stop):
            pending.append(task.remote(cfg.space, queue.pop(0), cfg, canary_ref))
        if not pending:
            break
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            record(ray.get(ref))
        if stop and stop.stop:  # let the ones in flight finish and be stored, start no more
            queue.clear()
