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

Every row names the worker that measured it (``extra.ray``: node id, host, process, the
resources Ray assigned) and the device id of that worker's own fingerprint.  This mode
measures *one* device, the driver's: its canary reference scales every ratio, so a row
from a worker whose fingerprint differs is refused (``ProfilingError``) instead of being
stored under the wrong device.  A fleet of different devices is ``hwnas.profiling.fleet``
(``--ray-resource NAME``), which fingerprints and calibrates each worker on itself.

Caveat stated plainly: CPU tasks on one machine share caches and memory bandwidth, so
for the cleanest CPU numbers run one task per machine (``--threads`` = cores).
"""
from __future__ import annotations

import logging

from hwnas.errors import ProfilingError

logger = logging.getLogger(__name__)

_WORKER_DEVICES: dict = {}


def worker_device(cfg) -> dict:
    """The fingerprint of the device this process measures on for ``cfg``'s settings (the
    provider that really loads, its options, threads, batch, precision, protocol), computed
    once per process: on a Ray worker, the worker's device, not the driver's."""
    from hwnas.profiling.campaign import campaign_device

    key = (cfg.ep, cfg.allow_fallback, cfg.threads, cfg.batch_size, cfg.precision, cfg.sessions, cfg.protocol)
    if key not in _WORKER_DEVICES:
        _WORKER_DEVICES[key] = campaign_device(cfg)
    return _WORKER_DEVICES[key]


def tag_row(row: dict, cfg) -> dict:
    """``row`` with the worker that measured it (``extra.ray``) and its device id
    (``row['device_id']``, not a stored column: the driver stores the row under it)."""
    from hwnas.ray_cluster import worker_info

    row["extra"] = {**(row.get("extra") or {}), "ray": worker_info()}
    row["device_id"] = worker_device(cfg)["device_id"]
    return row


def measure_task(space_name: str, arch: str, cfg, canary) -> dict:
    """One arch measured on the worker that runs this task, tagged with that worker."""
    from hwnas.profiling.campaign import measure_arch

    return tag_row(measure_arch(space_name, arch, cfg, canary), cfg)


def run_on_ray(archs: list[str], cfg, record, *, address: str = "auto", stop=None, window: int | None = None,
               canary=None, device_id: str | None = None) -> None:
    """Measure ``archs`` on Ray workers and call ``record(row)`` in the driver for each
    result as it arrives.  Connects to ``address`` (``hwnas.ray_cluster.connect``: 'auto' =
    the running cluster, or a local one if none), unless Ray is already initialised.
    ``device_id``: the device the rows are stored under; a row measured on another one
    raises ``ProfilingError`` (the rows recorded before it stay)."""
    from hwnas.ray_cluster import connect, task_resources

    ray = connect(address)
    resources = task_resources(cfg.ep, cfg.threads)
    task = ray.remote(**resources)(measure_task)
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
            row = ray.get(ref)
            if device_id is not None and row["device_id"] != device_id:
                node = row["extra"]["ray"]
                raise ProfilingError(
                    f"a worker on {node['hostname']} (Ray node {node['node_id'][:12]}) is device {row['device_id']}, "
                    f"not the driver's {device_id}: its rows would be stored under the wrong device and scaled by "
                    "another device's canary; measure a fleet of devices with --ray-resource NAME")
            record(row)
        if stop and stop.stop:  # let the ones in flight finish and be stored, start no more
            queue.clear()
