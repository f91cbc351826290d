"""Device fingerprint: everything that could change a measured number.

Why: a latency is only meaningful together with the machine and settings that produced
it (DESIGN.md, "Device fingerprint").  The store keeps the fingerprint once per device and
every row points to it; a predictor remembers it and refuses other devices.  The
``device_id`` is a hash over the fields that change numbers (hardware, driver, ORT
version, execution provider and its options, threads, batch, precision), so the same
machine with the same settings always maps to the same id, while a cosmetic field (the
host name) does not change it.

The measurement protocol's ``repeats`` (fresh sessions per arch, the lowest median kept)
also changes the numbers (by 10-40% on a host with contention phases), so it is part of
the fingerprint and of the id, but only when it is not 1: ids of data measured before
repeats existed (one session) stay what they were.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import subprocess
from functools import lru_cache

logger = logging.getLogger(__name__)

# fields that enter the device id; everything else is informative only
ID_FIELDS = ("cpu_model", "cpu_count", "gpu_name", "gpu_driver", "ort_version", "ep", "ep_options",
             "threads", "batch_size", "precision", "machine")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def gpu_info() -> tuple[str | None, str | None]:
    """(GPU name, driver version) of GPU 0 via ``nvidia-smi``; (None, None) without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        logger.debug("nvidia-smi failed: %s", e)
        return None, None
    first = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in first:
        return None, None
    name, driver = (s.strip() for s in first.split(",", 1))
    return name, driver


def device_fingerprint(ep: str = "cpu", *, ep_options: dict | None = None, threads: int = 1,
                       batch_size: int = 1, precision: str = "fp32", repeats: int = 1) -> dict:
    """A JSON-able dict describing the device and measurement settings.

    ``ep`` is the execution provider that actually runs (after any fallback).  The GPU
    fields are filled only for GPU providers: a CPU measurement does not depend on the GPU
    in the box, and leaving it out lets CPU data from identical machines share an id.
    """
    import os

    import onnxruntime as ort

    gpu_name, gpu_driver = gpu_info() if ep != "cpu" else (None, None)
    fp = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "gpu_name": gpu_name,
        "gpu_driver": gpu_driver,
        "ort_version": ort.__version__,
        "ep": ep,
        "ep_options": {k: str(v) for k, v in sorted((ep_options or {}).items())},
        "threads": int(threads),
        "batch_size": int(batch_size),
        "precision": precision,
        "repeats": int(repeats),
        "hostname": platform.node(),
        "python": platform.python_version(),
    }
    fp["device_id"] = device_id(fp)
    return fp


def device_id(fp: dict) -> str:
    """Stable 12-hex-digit hash of the fields of ``fp`` that change numbers."""
    key = {k: fp.get(k) for k in ID_FIELDS}
    if (fp.get("repeats") or 1) != 1:  # protocol field; absent/1 keeps the ids of one-session data
        key["repeats"] = int(fp["repeats"])
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def device_name(fp: dict) -> str:
    """A short human label: '<gpu or cpu model> / <ep> / <threads>t'."""
    hw = fp.get("gpu_name") or fp.get("cpu_model") or fp.get("name") or "unknown"
    if fp.get("ep") is None:
        return str(hw)
    name = f"{hw} / {fp['ep']} / {fp.get('threads')}t / b{fp.get('batch_size')} {fp.get('precision')}"
    return name + (f" / R{fp['repeats']}" if (fp.get("repeats") or 1) != 1 else "")
