"""Connect to a Ray cluster, check what it offers, and say what a task must reserve.

Why one module: ``hwnas profile --ray`` (measurements) and ``hwnas export --top-k --ray``
(candidate training) both need the same three things, and each got them wrong in its own
way when they lived beside the code that used them:

- **connecting without hanging.**  ``ray.init(address="127.0.0.1:1")`` does not fail: Ray's
  GCS client retries for minutes (measured: > 5 min with Ray 2.60 before we gave up).  So an
  explicit address is first probed with a plain TCP connect (``PROBE_TIMEOUT_S``; a closed
  port is refused at once), and ``ray.init`` itself runs under a bound
  (``CONNECT_TIMEOUT_S``) for a port that answers but is not a Ray head.  ``auto`` is the
  running cluster (Ray's own discovery) or, when there is none, a local one; ``local``
  always starts a local one.
- **checking resources before submitting.**  A task that asks for a custom resource no node
  has stays pending forever, silently.  ``require_resource`` looks at
  ``ray.cluster_resources()`` first and names the custom resources the cluster does have.
- **what one task reserves** (``task_resources``): ``num_cpus=threads`` on the CPU provider,
  one GPU on a GPU provider, plus ``{NAME: amount}`` of a custom resource.  Ray then places
  at most one task per reserved core/GPU/resource unit, which is what keeps two
  measurements from sharing a device.

Ray is optional (``hwnas[distributed]``): it is imported here, on use, with an install hint.
"""
from __future__ import annotations

import logging
import socket
import threading

from hwnas.errors import ClusterError, valid_list

logger = logging.getLogger(__name__)

__all__ = ["CONNECT_TIMEOUT_S", "PROBE_TIMEOUT_S", "connect", "custom_resources", "fits", "import_ray", "nodes_with",
           "require_fit", "require_resource", "task_resources", "worker_info"]

PROBE_TIMEOUT_S = 5.0  # TCP connect to HOST:PORT before ray.init (a firewall that drops packets waits this long)
CONNECT_TIMEOUT_S = 30.0  # ray.init against an address that accepts TCP
# resources every Ray node has; the rest are custom ones a user advertised (ray start --resources)
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type:")


def import_ray():
    """The ``ray`` module, or a ``ClusterError`` with the install hint."""
    try:
        import ray
    except ImportError as e:
        raise ClusterError("--ray needs Ray: pip install 'hwnas[distributed]'") from e
    return ray


def _split_address(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray {address!r} is not a Ray address; give auto, local or HOST:PORT "
                           "(e.g. 10.0.0.5:6379, as 'ray start --head' prints)")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout_s: float) -> None:
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise ClusterError(f"no Ray cluster answers at {address!r} ({why} within {timeout_s:g} s); "
                           "start one with 'ray start --head' or give --ray auto") from None


class _NoSigtermWarning(logging.Filter):
    """ray.init off the main thread warns that it cannot set its SIGTERM handler; we know."""

    def filter(self, record):
        return "SIGTERM handler" not in record.getMessage()


def _init_bounded(ray, kwargs: dict, timeout_s: float, address: str) -> None:
    """``ray.init(**kwargs)`` in a helper thread, given up after ``timeout_s``: Ray's own
    retries are not interruptible from Python, so the bound is a thread join.  A timed-out
    attempt leaves its (daemon) thread blocked; the process can still exit."""
    box: dict = {}

    def run():
        try:
            ray.init(**kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    flt = _NoSigtermWarning()
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(flt)
    try:
        t = threading.Thread(target=run, name="hwnas-ray-init", daemon=True)
        t.start()
        t.join(timeout_s)
    finally:
        worker_log.removeFilter(flt)
    if t.is_alive():
        raise ClusterError(f"the Ray cluster at {address!r} did not answer within {timeout_s:g} s "
                           "(the port is open, but is it a Ray head? 'ray status' on that machine tells)")
    if "error" in box:
        raise box["error"]


def connect(address: str = "auto", *, timeout_s: float = CONNECT_TIMEOUT_S,
            probe_timeout_s: float = PROBE_TIMEOUT_S):
    """Connect this process to Ray and return the ``ray`` module; a no-op when Ray is
    already initialised (a test's ``ray.init(num_cpus=2)``, or a notebook's).

    ``address``: ``auto`` (the running cluster, else a new local one), ``local`` (a new
    local one) or ``HOST:PORT`` / ``ray://HOST:PORT`` (that cluster; ``ClusterError`` within
    about ``probe_timeout_s`` when nothing listens there, within ``timeout_s`` when what
    listens is not Ray)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kw = dict(include_dashboard=False, log_to_driver=False)
    if address == "local":
        ray.init(**kw)
    elif address == "auto":
        try:
            _init_bounded(ray, dict(kw, address="auto"), timeout_s, address)
        except ConnectionError:  # no running cluster: this machine is the cluster
            logger.info("no running Ray cluster found; starting a local one")
            ray.init(**kw)
    else:
        _probe(address, probe_timeout_s)
        try:
            _init_bounded(ray, dict(kw, address=address), timeout_s, address)
        except ConnectionError as e:
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    logger.info("ray: %s", ray.cluster_resources())
    return ray


def custom_resources(resources: dict) -> dict:
    """The user-advertised resources of a ``cluster_resources()`` / node resources dict."""
    return {k: v for k, v in resources.items()
            if not k.startswith("node:") and not any(k == b or (b.endswith(":") and k.startswith(b))
                                                     for b in _BUILTIN)}


def require_resource(ray, name: str, amount: float = 1.0) -> float:
    """The cluster's total of custom resource ``name``; a ``ClusterError`` naming the custom
    resources it does have when no node advertises ``amount`` of it (a task asking for it
    would wait forever)."""
    total = ray.cluster_resources()
    have = float(total.get(name, 0.0))
    if have <= 0:
        custom = custom_resources(total)
        listed = valid_list(f"{k}={v:g}" for k, v in sorted(custom.items())) or "none"
        raise ClusterError(f"no worker of the Ray cluster advertises the resource {name!r}; its custom resources: "
                           f"{listed} (start workers with: ray start --address=HEAD:PORT --resources "
                           f"'{{\"{name}\": 1}}')")
    if not any(float(n["Resources"].get(name, 0.0)) >= amount for n in ray.nodes() if n.get("Alive")):
        raise ClusterError(f"no single worker has {amount:g} of resource {name!r} (cluster total {have:g}); "
                           "a task would wait forever")
    return have


def fits(node: dict, resources: dict) -> bool:
    """Whether a ``ray.nodes()`` entry has what one task of ``resources`` (``task_resources``) reserves."""
    have = node.get("Resources", {})
    need = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0), **resources.get("resources", {})}
    return all(float(have.get(k, 0.0)) >= float(v) for k, v in need.items() if v)


def require_fit(ray, resources: dict, what: str = "a task") -> list[dict]:
    """The live nodes on which one task of ``resources`` fits; a ``ClusterError`` saying what
    the nodes have when none does (the task would wait forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    ok = [n for n in nodes if fits(n, resources)]
    if not ok:
        need = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0), **resources.get("resources", {})}
        need = {k: v for k, v in need.items() if v}
        have = valid_list("{" + ", ".join(f"{k}: {float(n['Resources'].get(k, 0.0)):g}" for k in need) + "}"
                          for n in nodes) or "no live node"
        raise ClusterError(f"no node of the Ray cluster can run {what} reserving "
                           f"{', '.join(f'{k}={v:g}' for k, v in need.items())}; its nodes have: {have}")
    return ok


def nodes_with(ray, name: str) -> list[dict]:
    """``ray.nodes()`` entries of the live nodes that advertise resource ``name``, by node id."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and float(n["Resources"].get(name, 0.0)) > 0]
    return sorted(nodes, key=lambda n: n["NodeID"])


def task_resources(ep: str, threads: int, *, resource: str | None = None, amount: float = 1.0) -> dict:
    """``ray.remote``/``.options`` keywords of one task: ``num_cpus=threads`` on the CPU
    provider, one GPU (and one CPU to drive it) on a GPU provider, plus ``{resource: amount}``."""
    out: dict = {"num_cpus": max(int(threads), 1)} if ep == "cpu" else {"num_gpus": 1, "num_cpus": 1}
    if resource is not None:
        out["resources"] = {resource: float(amount)}
    return out


def worker_info() -> dict:
    """Where the calling task runs: Ray node id, host name, process id and the resources Ray
    assigned to this task (what it reserved, e.g. ``{"CPU": 1, "jetson_orin": 1}``); called
    inside a task, it lets the driver record which worker produced a result."""
    import os
    import platform

    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "hostname": platform.node(), "pid": os.getpid(),
            "resources": {k: float(v) for k, v in sorted(ctx.get_assigned_resources().items())}}
