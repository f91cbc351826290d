"""Execution providers: which one can really run, and sessions with explicit options.

Why a probe: ``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` and
``TensorrtExecutionProvider`` in ``get_available_providers()`` even on a machine with no
GPU and no CUDA libraries; a session asked for them silently runs on the CPU.  So we
(1) let ORT preload the CUDA/cuDNN libraries of pip packages where it can
(``onnxruntime.preload_dlls``, ORT >= 1.21), (2) ``dlopen`` the provider library
ourselves, which names the missing library, and (3) check ``session.get_providers()``
of the created session.  A provider that fails any step is *unavailable* with a reason.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import lru_cache

from hwnas.errors import ProfilingError, valid_list

logger = logging.getLogger(__name__)

EPS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_LIBS = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}


def check_ep(ep: str) -> str:
    if ep not in EPS:
        raise ProfilingError(f"unknown execution provider {ep!r}; valid: {valid_list(EPS)}")
    return ep


@lru_cache(maxsize=None)
def unavailable_reason(ep: str) -> str | None:
    """None if ``ep`` can load here, else a sentence saying why not (cached per process)."""
    import onnxruntime as ort

    check_ep(ep)
    if ep == "cpu":
        return None
    if EPS[ep] not in ort.get_available_providers():
        return (f"this onnxruntime build ({ort.__version__}) has no {EPS[ep]}; "
                "install onnxruntime-gpu")
    if hasattr(ort, "preload_dlls"):
        buf = io.StringIO()
        try:  # it prints what it could not find; keep that for the debug log
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                ort.preload_dlls()
        except Exception as e:  # noqa: BLE001 - any failure only means "not preloaded"
            logger.debug("onnxruntime.preload_dlls failed: %s", e)
        logger.debug("preload_dlls: %s", buf.getvalue().strip())
    lib = os.path.join(os.path.dirname(ort.__file__), "capi", _LIBS[ep])
    try:
        ctypes.CDLL(lib)
    except OSError as e:
        return f"{EPS[ep]} cannot load: {e} (see onnxruntime.ai/docs/install for CUDA/cuDNN/TensorRT)"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return f"{EPS[ep]} cannot run: no NVIDIA driver (libcuda.so.1 not found) - is there a GPU?"
    return None


def session_options(threads: int, *, log_severity: int = 3):
    """Explicit ORT session options (DESIGN.md measurement protocol): all graph
    optimizations, ``intra_op_num_threads`` as asked, one inter-op thread, sequential.

    With more than one thread the pool does not spin-wait between runs
    (``session.intra_op.allow_spinning = 0``): paired timing keeps the canary's session open
    beside the arch's, and an idle pool that spins steals the cores the timed session needs
    (on a 2-vCPU host, two measurements of the same 2-thread archs agreed in rank at
    Spearman 0.71 with spinning; ``benchmarks/results/adapt.md`` has the figure without)."""
    import onnxruntime as ort

    if int(threads) < 1:
        raise ProfilingError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = log_severity
    if int(threads) > 1:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


@dataclass(frozen=True)
class ProviderChoice:
    ep: str  # requested
    ep_used: str
    fallback: bool
    reason: str | None  # why the requested one is not used
    providers: tuple  # what to pass to InferenceSession


def choose_provider(ep: str, *, allow_fallback: bool = False, ep_options: dict | None = None,
                    cache_dir: str | None = None) -> ProviderChoice:
    """The provider list for ``ep``; an unavailable GPU provider raises ``ProfilingError``
    with the reason unless ``allow_fallback``, which then logs a WARNING and picks CPU."""
    check_ep(ep)
    reason = unavailable_reason(ep)
    if reason is not None:
        if not allow_fallback:
            raise ProfilingError(f"execution provider {ep!r} is not usable: {reason} "
                                 "(pass --allow-fallback to measure on the CPU instead, recorded as a fallback)")
        logger.warning("execution provider %r is not usable (%s); FALLING BACK to cpu, recorded in the data",
                       ep, reason)
        return ProviderChoice(ep, "cpu", True, reason, (EPS["cpu"],))
    return ProviderChoice(ep, ep, False, None, provider_list(ep, ep_options, cache_dir))


def provider_list(ep: str, ep_options: dict | None = None, cache_dir: str | None = None) -> tuple:
    opts = dict(ep_options or {})
    if ep == "cpu":
        return (EPS["cpu"],)
    if ep == "cuda":
        return ((EPS["cuda"], opts), EPS["cpu"])
    trt = {"trt_engine_cache_enable": "True",
           "trt_engine_cache_path": cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hwnas", "trt"),
           **opts}
    os.makedirs(trt["trt_engine_cache_path"], exist_ok=True)
    return ((EPS["tensorrt"], trt), (EPS["cuda"], {}), EPS["cpu"])


def create_session(model_bytes: bytes, choice: ProviderChoice, threads: int):
    """An ``InferenceSession`` for the chosen provider (check it with ``session_mismatch``)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model_bytes, session_options(threads), providers=list(choice.providers))
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph...)
        raise ProfilingError(f"ONNX Runtime could not create a {choice.ep_used} session: {e}") from e


def _timed_session(model_bytes: bytes, choice: ProviderChoice, threads: int):
    """(session, milliseconds it took to create)."""
    t0 = time.perf_counter()
    sess = create_session(model_bytes, choice, threads)
    return sess, (time.perf_counter() - t0) * 1e3


def session_mismatch(sess, choice: ProviderChoice) -> str | None:
    """A reason if the session does not run on the chosen provider, else None."""
    used = sess.get_providers()
    if EPS[choice.ep_used] != used[0]:
        return (f"asked for {EPS[choice.ep_used]} but the session runs on {used}: "
                "the provider failed to initialise")
    return None


def open_session(model_bytes: bytes, ep: str, *, threads: int, allow_fallback: bool = False,
                 ep_options: dict | None = None, cache_dir: str | None = None):
    """``(session, choice, session_ms)`` on ``ep``, checked: ORT silently runs on the CPU when
    a GPU provider fails to initialise, so a session that does not run where it was asked to
    is a ``ProfilingError`` unless ``allow_fallback``, which logs a WARNING and opens a CPU
    session whose ``choice`` records the fallback.  ``session_ms`` times the session that is
    returned.  The one place the runner and the exporter open sessions."""
    choice = choose_provider(ep, allow_fallback=allow_fallback, ep_options=ep_options, cache_dir=cache_dir)
    sess, session_ms = _timed_session(model_bytes, choice, threads)
    mismatch = session_mismatch(sess, choice)
    if mismatch is not None:
        if not allow_fallback:
            raise ProfilingError(f"execution provider {ep!r} is not usable: {mismatch}")
        logger.warning("%s; FALLING BACK to cpu, recorded in the data", mismatch)
        choice = replace(choice, ep_used="cpu", fallback=True, reason=mismatch, providers=(EPS["cpu"],))
        sess, session_ms = _timed_session(model_bytes, choice, threads)
    return sess, choice, session_ms
