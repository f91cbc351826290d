"""Device fingerprint: everything that could change a measured number.

Why: a latency is only meaningful together with the machine and settings that produced
it (DESIGN.md, "Device fingerprint").  The store keeps the fingerprint once per device and
every row points to it; a predictor remembers it and refuses other devices.  The
``device_id`` is a hash over the fields that change numbers (hardware, driver, ORT
version, execution provider and its options, threads, batch, precision), so the same
machine with the same settings always maps to the same id, while a cosmetic field (the
host name) does not change it.

The CPU *model name* is not enough: two "AMD EPYC" hosts shared one id, yet their
relative latencies differed (now/stored ratios 0.82 and 0.67 on the same archs, and after
one global scale factor only 48-75% of archs were within +-10%).  What reorders networks
is the microarchitecture (vendor, family, model, stepping), the instruction sets ORT's
kernels dispatch on (AVX2 vs AVX-512/VNNI/AMX; NEON vs SVE/i8mm), the caches and the cores
the process may use; on GPUs the compute capability and the maximum clocks.  So these are
recorded and hashed too.

Old fingerprints keep their ids: every field added after the first version (``repeats``,
the hardware fields above, ``protocol``) enters the hash only when it is present (and, for
``repeats``, not 1), so data measured before stays under the id it was stored with, while
``missing_identity`` says what such a fingerprint cannot tell apart.

The measurement protocol changes numbers as well: ``repeats`` (fresh sessions per arch,
the lowest median kept; 10-40% on a host with contention phases) and ``protocol``
("canary": timed in alternation with a canary, DESIGN.md "Measurement protocol";
"plain": timed alone).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

# fields of the first fingerprint version: always hashed (absent ones as null)
ID_FIELDS = ("cpu_model", "cpu_count", "gpu_name", "gpu_driver", "ort_version", "ep", "ep_options",
             "threads", "batch_size", "precision", "machine")
# added later: hashed only when present and not None, so old fingerprints keep their id
EXTRA_ID_FIELDS = ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags",
                   "cpu_caches", "cpu_visible_cores", "gpu_compute_capability", "gpu_clocks", "protocol")
GPU_FIELDS = ("gpu_name", "gpu_driver", "gpu_compute_capability", "gpu_clocks")
# what a modern fingerprint carries to identify the hardware (not the settings)
IDENTITY_FIELDS = ("machine", "cpu_model", "cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping",
                   "cpu_flags", "cpu_caches", "cpu_count", "cpu_visible_cores", *GPU_FIELDS)
SETTING_FIELDS = ("ort_version", "ep", "ep_options", "threads", "batch_size", "precision", "protocol", "repeats")
PROTOCOLS = ("canary", "plain")

# instruction sets ORT's MLAS kernels dispatch on (names as in /proc/cpuinfo)
X86_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
ARM_FLAGS = ("asimd", "sve", "sve2", "i8mm", "bf16", "asimddp")

CPUINFO_PATH = "/proc/cpuinfo"
CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


def _int(s: str | None, base: int = 10) -> int | None:
    try:
        return int(s, base) if s is not None else None
    except ValueError:
        return None


CPU_FIELDS = ("cpu_model", "cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags")


def parse_cpuinfo(text: str) -> dict:
    """The ``CPU_FIELDS`` of the first CPU in a /proc/cpuinfo text (x86 or aarch64).

    A value is None when the text does not have it; ``cpu_flags`` is the sorted list of
    dispatch flags present (``X86_FLAGS`` or ``ARM_FLAGS``).  On aarch64 vendor, family
    and model are the implementer (as printed, "0x41"), architecture and part (an int),
    stepping is ``r<variant>p<revision>``.
    """
    kv: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            kv.setdefault(k.strip().lower(), v.strip())  # first CPU's value wins
    if "flags" in kv:  # x86
        have = set(kv["flags"].split())
        return {"cpu_model": kv.get("model name"), "cpu_vendor": kv.get("vendor_id"),
                "cpu_family": _int(kv.get("cpu family")), "cpu_model_number": _int(kv.get("model")),
                "cpu_stepping": _int(kv.get("stepping")), "cpu_flags": sorted(f for f in X86_FLAGS if f in have)}
    variant, revision = _int(kv.get("cpu variant"), 16), kv.get("cpu revision")
    have = set(kv.get("features", "").split())
    return {"cpu_model": kv.get("model name"), "cpu_vendor": kv.get("cpu implementer"),
            "cpu_family": _int(kv.get("cpu architecture")) or kv.get("cpu architecture"),
            "cpu_model_number": _int(kv.get("cpu part"), 16),
            "cpu_stepping": f"r{variant}p{revision}" if variant is not None and revision else None,
            "cpu_flags": sorted(f for f in ARM_FLAGS if f in have)}


@lru_cache(maxsize=1)
def read_cpuinfo() -> dict:
    """``parse_cpuinfo`` of ``CPUINFO_PATH``, read once; every field None where there is
    none (macOS, Windows: unknown, not "no flags")."""
    try:
        return parse_cpuinfo(Path(CPUINFO_PATH).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return dict.fromkeys(CPU_FIELDS)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    return read_cpuinfo()["cpu_model"] or platform.processor() or platform.machine() or "unknown"


def cpu_caches(root: str | os.PathLike = CACHE_DIR) -> dict | None:
    """Data/unified cache sizes of cpu0 as sysfs prints them, e.g. ``{"L1d": "32K", "L2":
    "512K", "L3": "32768K"}``; None where sysfs has none."""
    out = {}
    for d in sorted(Path(root).glob("index*")):
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            out[f"L{level}" + ("d" if kind == "Data" else "")] = size
    return dict(sorted(out.items())) or None


def visible_cores() -> int | None:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container
    quota), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _smi(exe: str, fields: str) -> list[str] | None:
    try:
        out = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        logger.debug("nvidia-smi --query-gpu=%s failed: %s", fields, e)
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    vals = [s.strip() for s in first.split(",")]
    return vals if len(vals) == fields.count(",") + 1 else None


@lru_cache(maxsize=1)
def gpu_details() -> dict:
    """GPU 0 via one ``nvidia-smi`` query: name, driver, compute capability ("9.0") and max
    clocks ``{"sm_mhz", "mem_mhz"}``.  An nvidia-smi too old for ``compute_cap`` is asked
    again for name and driver only; every value is None without a GPU."""
    out = dict.fromkeys(("name", "driver", "compute_capability", "clocks"))
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return out
    vals = _smi(exe, "name,driver_version,compute_cap,clocks.max.sm,clocks.max.mem")
    if vals is None:
        vals = _smi(exe, "name,driver_version")
    if vals is None:
        return out
    vals = [None if v.startswith("[") or v in ("", "N/A") else v for v in vals]  # "[N/A]"
    out["name"], out["driver"] = vals[0], vals[1]
    if len(vals) == 5:
        out["compute_capability"] = vals[2]
        sm, mem = _int(vals[3]), _int(vals[4])
        out["clocks"] = {"sm_mhz": sm, "mem_mhz": mem} if sm or mem else None
    return out


def gpu_info() -> tuple[str | None, str | None]:
    """(GPU name, driver version) of GPU 0; (None, None) without one."""
    d = gpu_details()
    return d["name"], d["driver"]


def device_fingerprint(ep: str = "cpu", *, ep_options: dict | None = None, threads: int = 1,
                       batch_size: int = 1, precision: str = "fp32", repeats: int = 1,
                       protocol: str | None = "canary") -> dict:
    """A JSON-able dict describing the device and measurement settings.

    ``ep`` is the execution provider that actually runs (after any fallback).  The GPU
    fields are filled only for GPU providers: a CPU measurement does not depend on the GPU
    in the box, and leaving it out lets CPU data from identical machines share an id.
    ``protocol`` is how rows are timed: "canary" (in alternation with a canary) or "plain".
    """
    import onnxruntime as ort

    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} or None, not {protocol!r}")
    gpu = gpu_details() if ep != "cpu" else dict.fromkeys(("name", "driver", "compute_capability", "clocks"))
    fp = {
        **read_cpuinfo(),
        "cpu_model": cpu_model(),
        "cpu_caches": cpu_caches(),
        "cpu_count": os.cpu_count(),
        "cpu_visible_cores": visible_cores(),
        "machine": platform.machine(),
        "gpu_name": gpu["name"],
        "gpu_driver": gpu["driver"],
        "gpu_compute_capability": gpu["compute_capability"],
        "gpu_clocks": gpu["clocks"],
        "ort_version": ort.__version__,
        "ep": ep,
        "ep_options": {k: str(v) for k, v in sorted((ep_options or {}).items())},
        "threads": int(threads),
        "batch_size": int(batch_size),
        "precision": precision,
        "repeats": int(repeats),
        "protocol": protocol,
        "hostname": platform.node(),
        "python": platform.python_version(),
    }
    fp["device_id"] = device_id(fp)
    return fp


def device_id(fp: dict) -> str:
    """Stable 12-hex-digit hash of the fields of ``fp`` that change numbers.

    ``ID_FIELDS`` always; ``repeats`` when not 1 and each of ``EXTRA_ID_FIELDS`` when
    present and not None, so a fingerprint stored before those existed keeps its id."""
    key = {k: fp.get(k) for k in ID_FIELDS}
    if (fp.get("repeats") or 1) != 1:  # protocol field; absent/1 keeps the ids of one-session data
        key["repeats"] = int(fp["repeats"])
    key.update({k: fp[k] for k in EXTRA_ID_FIELDS if fp.get(k) is not None})
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def missing_identity(fp: dict) -> list[str]:
    """The ``IDENTITY_FIELDS`` that ``fp`` lacks (an old fingerprint: it cannot tell two
    hosts with the same model name apart).  GPU fields are required only for GPU
    providers; an imported device (a name, no hardware) reports one short label.  A field
    that is present but None was looked for and is not available on that platform."""
    if fp.get("imported"):
        return ["hardware (imported data: only a name)"]
    gpu = fp.get("ep") not in (None, "cpu")
    return [k for k in IDENTITY_FIELDS if k not in fp and (gpu or k not in GPU_FIELDS)]


def hardware_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """``(field, a's value, b's value)`` for each of ``IDENTITY_FIELDS`` that differs (a
    field missing on one side shows as None).  Settings (ep, threads, batch, precision,
    protocol, ORT version) are not compared here: callers compare them separately, since a
    setting mismatch is fixed by re-measuring, a hardware mismatch only by another device."""
    return [(k, a.get(k), b.get(k)) for k in IDENTITY_FIELDS if a.get(k) != b.get(k)]


def _cell(v: object, other: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        if isinstance(other, list) and v != other:  # show what only this side has
            only, n = [x for x in v if x not in other], sum(x in other for x in v)
            return " ".join(map(str, only or ["-"])) + (f" (+{n} common)" if n else "")
        return " ".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return " ".join(f"{k}={x}" for k, x in v.items()) or "-"
    return str(v)


def describe_side_by_side(a: dict, b: dict, labels: tuple[str, str] = ("theirs", "this machine")) -> str:
    """A compact text table of two fingerprints for warnings such as "this predictor was
    trained on another device": the device names, then one line per identity field or
    setting that differs (marked ``*``) or always matters (model, ORT version, ep, threads,
    batch, precision, protocol); fields empty on both sides are left out."""
    always = {"cpu_model", "gpu_name", "ort_version", "ep", "threads", "batch_size", "precision", "protocol"}
    rows = [("", "device", device_name(a), device_name(b))]
    for k in (*IDENTITY_FIELDS, *SETTING_FIELDS):
        va, vb = a.get(k), b.get(k)
        if k == "repeats":  # absent means the one-session protocol
            va, vb = va or 1, vb or 1
        if va is None and vb is None or (va == vb and k not in always):
            continue
        rows.append(("*" if va != vb else "", k, _cell(va, vb), _cell(vb, va)))
    head = ("", "", *labels)
    w = [max(len(r[i]) for r in (head, *rows)) for i in range(3)]
    return "\n".join(f"{m:1} {k:<{w[1]}}  {x:<{w[2]}}  {y}".rstrip() for m, k, x, y in (head, *rows))


def _isa(flags: list | None) -> str | None:
    """The widest vector ISA among ``flags``, for a short name."""
    for tag, need in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"),
                      ("sve2", "sve2"), ("sve", "sve"), ("neon", "asimd")):
        if flags and need in flags:
            return tag
    return None


def device_name(fp: dict) -> str:
    """A short human label: '<gpu or cpu model> (<family/model, ISA>) / <ep> / <threads>t /
    b<batch> <precision>[ / R<repeats>][ / plain]'.  Old fingerprints keep their names."""
    hw = fp.get("gpu_name") or fp.get("cpu_model") or fp.get("name") or "unknown"
    if fp.get("gpu_name") and fp.get("gpu_compute_capability"):
        hw = f"{hw} (sm {fp['gpu_compute_capability']})"
    elif not fp.get("gpu_name") and fp.get("cpu_model_number") is not None:
        fam, model = fp.get("cpu_family"), fp["cpu_model_number"]
        arm = str(fp.get("cpu_vendor") or "").startswith("0x")  # aarch64: implementer, part
        arch = f"part {model:#x}" if arm and isinstance(model, int) else f"fam {fam} model {model}"
        hw = f"{hw} ({', '.join(filter(None, (arch, _isa(fp.get('cpu_flags')))))})"
    if fp.get("ep") is None:
        return str(hw)
    name = f"{hw} / {fp['ep']} / {fp.get('threads')}t / b{fp.get('batch_size')} {fp.get('precision')}"
    name += f" / R{fp['repeats']}" if (fp.get("repeats") or 1) != 1 else ""
    return name + (" / plain" if fp.get("protocol") == "plain" else "")
