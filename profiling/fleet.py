"""A profiling fleet: one campaign per device, measured on the Ray workers of that device.

Why (DESIGN.md, "Scaling out"): a latency predictor is per device, so a fleet of target
devices (Jetsons, phones on a test rack, GPU servers) should fill one database with one
dataset per device, each measured *on* that device.  Workers opt in by advertising a Ray
custom resource (``ray start --address HEAD:PORT --resources '{"jetson_orin": 1}'``) and
``hwnas profile --ray HEAD:PORT --ray-resource jetson_orin`` measures on every worker that
has it.  What makes it right, not just parallel:

- **fingerprint on the worker.**  Each worker node runs one task that fingerprints the
  device it measures on (``distributed.worker_device``: CPU microarchitecture, GPU,
  ORT version, the provider that really loads, threads...).  Nodes with equal fingerprints
  are one device (identical machines share a dataset, as the fingerprint contract says);
  every measurement row comes back tagged with its worker's device id and is stored under
  it, never under the driver's.
- **canary reference on the worker.**  A device without a stored reference is calibrated
  by a task on one of its own nodes (the same calibration block as a local campaign,
  ``canary.calibrate``); the driver stores it under that device, and turns each of that
  device's ratios into milliseconds with that reference (``campaign.row_recorder``).
- **placement.**  Every task reserves ``{NAME: amount}`` (and ``num_cpus=threads`` / one
  GPU) and is pinned to its node (``NodeAffinitySchedulingStrategy``), so it can only run
  on a worker of the device it was planned for; the advertised amount is how many
  measurements a worker runs at once (1 for clean numbers).
- **resuming.**  Each device has its own campaign (``campaign.plan_campaign``: the planned
  archs are stored before measuring, keyed by settings and device), rows are committed one
  by one by the single SQLite writer (this process), so the same command resumes every
  device where it stopped and never stores an arch twice.  A worker that dies loses only
  its tasks in flight; its device's campaign then stays open for the next run.

Each device measures the same seeded sample (minus what it already has), so the datasets
of a fleet line up arch by arch (``hwnas.profiling.transfer`` uses that).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from hwnas.errors import HwnasError, ProfilingError

logger = logging.getLogger(__name__)

__all__ = ["FleetDevice", "FleetResult", "connect_fleet", "run_fleet"]


@dataclass
class FleetDevice:
    """One device of the fleet: its fingerprint, its worker nodes and its campaign."""

    device_id: str
    fingerprint: dict
    nodes: list[str]  # Ray node ids
    hostnames: list[str]
    result: object  # campaign.CampaignResult
    lost: int = 0  # tasks lost to a worker or node that died (measured again on resume)


@dataclass
class FleetResult:
    resource: str
    devices: list[FleetDevice] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def measured(self) -> int:
        return sum(d.result.measured for d in self.devices)


def connect_fleet(address: str, resource: str, amount: float = 1.0):
    """Connect to the cluster and check that some worker advertises ``amount`` of
    ``resource``: a ``ClusterError`` before anything is planned or stored otherwise."""
    from hwnas.ray_cluster import connect, require_resource

    ray = connect(address)
    require_resource(ray, resource, amount)
    return ray


# --------------------------------------------------------------------------- worker tasks
def _fingerprint_task(cfg) -> dict:
    from hwnas.profiling.distributed import worker_device
    from hwnas.ray_cluster import worker_info

    try:
        return {"fingerprint": worker_device(cfg), "worker": worker_info()}
    except HwnasError as e:  # e.g. the GPU provider does not load there: the driver names the worker
        return {"error": f"{type(e).__name__}: {e}", "worker": worker_info()}


@dataclass(frozen=True)
class _WorkerReference:
    """A ``CanaryReference`` measured on a worker; its stored calibration names the worker."""

    reference: object  # canary.CanaryReference
    worker: dict

    @property
    def reference_ms(self) -> float:
        return self.reference.reference_ms

    def to_dict(self) -> dict:
        return {**self.reference.to_dict(), "ray": self.worker}


def _calibrate_task(canary, cfg) -> dict:
    from hwnas.profiling.campaign import calibration_kwargs
    from hwnas.profiling.canary import calibrate
    from hwnas.profiling.distributed import worker_device
    from hwnas.ray_cluster import worker_info

    try:
        ref = calibrate(canary, **calibration_kwargs(cfg))
        return {"reference": _WorkerReference(ref, worker_info()), "device_id": worker_device(cfg)["device_id"]}
    except HwnasError as e:
        return {"error": f"{type(e).__name__}: {e}"}


# --------------------------------------------------------------------------- the driver
def _pinned(node_id: str, resources: dict) -> dict:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return dict(resources, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))


def _discover(ray, cfg, nodes: list[dict], resources: dict) -> dict[str, dict]:
    """{device id: {"fingerprint", "nodes", "hostnames"}} of the resource's worker nodes."""
    task = ray.remote(_fingerprint_task)
    answers = ray.get([task.options(**_pinned(n["NodeID"], resources)).remote(cfg) for n in nodes])
    devices: dict[str, dict] = {}
    for node, a in zip(nodes, answers):
        if "error" in a:
            raise ProfilingError(f"worker {a['worker']['hostname']} (Ray node {node['NodeID'][:12]}) cannot measure "
                                 f"with these settings: {a['error']}")
        fp = a["fingerprint"]
        d = devices.setdefault(fp["device_id"], {"fingerprint": fp, "nodes": [], "hostnames": []})
        d["nodes"].append(node["NodeID"])
        d["hostnames"].append(a["worker"]["hostname"])
    return devices


def _slots(node: dict, resource: str, amount: float, resources: dict) -> int:
    """Tasks a node can run at once: its units of the resource, bounded by its CPUs/GPUs."""
    have = node["Resources"]
    n = int(float(have.get(resource, 0.0)) // amount)
    if "num_gpus" in resources:
        n = min(n, int(float(have.get("GPU", 0.0))))
    n = min(n, int(float(have.get("CPU", 0.0)) // max(resources.get("num_cpus", 1), 1)))
    return max(n, 1)


def _calibrate_devices(ray, store, cfg, plans: dict, resolution, resources: dict) -> None:
    """Give every device with archs to measure its canary and reference: the stored one, or
    a fresh calibration on one of its own nodes (all devices' calibrations in parallel)."""
    from hwnas.profiling.campaign import new_canary, stored_canary

    need, fresh = [], None
    for dev, p in plans.items():
        if not p["todo"]:
            continue
        found = stored_canary(store, cfg, dev, resolution)
        if found is not None:
            p["canary"], p["stored"] = found
        else:
            fresh = fresh or new_canary(cfg, resolution)
            need.append(dev)
    if not need:
        return
    logger.info("calibrating the canary %s on %d device(s)", fresh.arch, len(need))
    task = ray.remote(_calibrate_task)
    canary_ref = ray.put(fresh)
    refs = [task.options(**_pinned(plans[dev]["nodes"][0], resources)).remote(canary_ref, cfg) for dev in need]
    for dev, a in zip(need, ray.get(refs)):
        if "error" in a:
            raise ProfilingError(f"calibrating the canary on device {dev} failed: {a['error']}")
        if a["device_id"] != dev:
            raise ProfilingError(f"the calibration of device {dev} ran on device {a['device_id']}")
        plans[dev]["canary"], plans[dev]["stored"] = fresh, store.add_canary(dev, fresh, a["reference"])


def run_fleet(store, cfg, *, address: str = "auto", resource: str, amount: float = 1.0, on_row=None,
              stop=None) -> FleetResult:
    """Run (or resume) ``cfg``'s campaign on every device of the workers that advertise
    ``resource``; rows go into ``store`` under the device that measured them.

    ``on_row(row, campaign_result)`` after each commit (the device's ``CampaignResult``).
    Raises ``ClusterError`` (no cluster, no such resource) before anything is stored.
    """
    from hwnas.profiling.campaign import (CampaignResult, StopFlag, _check_reference, _resolution_filter,
                                          canary_summary, check_config, plan_campaign, row_recorder)
    from hwnas.profiling.distributed import measure_task
    from hwnas.ray_cluster import fits, nodes_with, require_fit, task_resources

    check_config(cfg)
    res_filter = _resolution_filter(cfg)
    if not amount > 0:
        raise ProfilingError(f"the amount of --ray-resource per task must be > 0, got {amount}")
    t_start = time.perf_counter()
    ray = connect_fleet(address, resource, amount)
    resources = task_resources(cfg.ep, cfg.threads, resource=resource, amount=amount)
    require_fit(ray, resources, f"a measurement (--threads {cfg.threads}, --ep {cfg.ep}, {resource})")
    nodes = [n for n in nodes_with(ray, resource) if fits(n, resources)]
    for n in nodes_with(ray, resource):
        if not fits(n, resources):
            logger.warning("Ray node %s advertises %s but cannot run a measurement reserving %s; left out",
                           n["NodeID"][:12], resource, resources)
    found = _discover(ray, cfg, nodes, resources)

    out = FleetResult(resource)
    plans: dict[str, dict] = {}
    for dev, d in found.items():
        store.add_device(d["fingerprint"])
        have = store.measured_archs(dev, cfg.space, batch=cfg.batch_size, precision=cfg.precision, ep=cfg.ep,
                                    resolution=res_filter)
        cid, planned, resumed = plan_campaign(store, cfg, dev, have)
        todo = [a for a in planned if a not in have]
        res = CampaignResult(cid, dev, len(planned), skipped=len(planned) - len(todo), resumed=resumed)
        out.devices.append(FleetDevice(dev, d["fingerprint"], d["nodes"], d["hostnames"], res))
        plans[dev] = {"todo": deque(todo), "nodes": d["nodes"], "canary": None, "stored": None}
        logger.info("device %s on %s: %d of %d planned archs to measure", dev, ", ".join(d["hostnames"]),
                    len(todo), len(planned))
    if cfg.canary:
        _calibrate_devices(ray, store, cfg, plans, res_filter, resources)
    by_dev = {d.device_id: d for d in out.devices}
    for dev, p in plans.items():
        if p["stored"] is not None:
            by_dev[dev].result.canary = canary_summary(p["stored"])
        p["record"] = row_recorder(store, dev, p["stored"], by_dev[dev].result, on_row)
        p["canary_ref"] = ray.put(p["canary"]) if p["canary"] is not None else None

    task = ray.remote(measure_task)
    node_dev = {node: dev for dev, p in plans.items() for node in p["nodes"]}
    cap = {n["NodeID"]: 2 * _slots(n, resource, amount, resources) for n in nodes}
    load = dict.fromkeys(node_dev, 0)
    pending: dict = {}
    stop = stop or StopFlag()
    with stop:
        while True:
            for node, dev in node_dev.items():
                p = plans[dev]
                while p["todo"] and load[node] < cap[node] and not stop.stop:
                    ref = task.options(**_pinned(node, resources)).remote(cfg.space, p["todo"].popleft(), cfg,
                                                                               p["canary_ref"])
                    pending[ref] = (node, dev)
                    load[node] += 1
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                node, dev = pending.pop(ref)
                load[node] -= 1
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayTaskError:
                    raise
                except ray.exceptions.RayError as e:  # the worker or its node died: measured again on resume
                    by_dev[dev].lost += 1
                    logger.warning("lost a measurement on Ray node %s (device %s): %s", node[:12], dev, e)
                    continue
                if row["device_id"] != dev:
                    raise ProfilingError(f"Ray node {node[:12]} was fingerprinted as device {dev} but measured as "
                                         f"{row['device_id']}: its settings changed during the campaign")
                plans[dev]["record"](row)
            if stop.stop:  # the ones in flight finish and are stored; start no more
                for p in plans.values():
                    p["todo"].clear()
    out.interrupted = stop.stop
    for d in out.devices:
        d.result.interrupted = out.interrupted
        _check_reference(d.result)
        if not out.interrupted and not d.lost:
            store.finish_campaign(d.result.campaign_id)
        d.result.wall_s = time.perf_counter() - t_start
    out.wall_s = time.perf_counter() - t_start
    return out
