"""Run an exported ONNX model: sessions, batched logits, parity with torch, accuracy and latency.

Why apart from ``hwnas.export``: ``hwnas evaluate`` measures *any* exported model, and the
export's own verification (parity on real images, measured latency) is the same code, so
both read the model the same way: resolution, dataset split and classes come from the
model's ``metadata_props``, not from a side file.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.errors import ExportError, HwnasError
from hwnas.jsonutil import to_jsonable
from hwnas.profiling.providers import check_ep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime against torch on the same validation images."""

    ep: str  # requested
    ep_used: str
    images: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float  # fraction of images where both pick the same class
    onnx_accuracy: float  # top-1 accuracy of the ONNX outputs on those images
    passed: bool


# --------------------------------------------------------------------------- ORT helpers
def ort_session(model: bytes | str | Path, ep: str = "cpu", *, allow_fallback: bool = False, threads: int = 1):
    """An ONNX Runtime session on ``ep``; returns ``(session, ep_used)``.

    Same provider semantics as the latency runner (``hwnas.profiling.providers``): ORT
    silently runs on the CPU when a GPU provider cannot load; here that is a
    ``ProfilingError`` naming the reason unless ``allow_fallback``.
    """
    from hwnas.profiling.providers import open_session

    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    sess, choice, _ = open_session(data, ep, threads=threads, allow_fallback=allow_fallback)
    return sess, choice.ep_used


def ort_logits(sess, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run float32 NCHW ``images`` through ``sess`` in batches; a fixed-batch model is fed
    exactly its batch size (a fixed batch of 1 is a loop over images)."""
    inp = sess.get_inputs()[0]
    dim0 = inp.shape[0]
    fixed = dim0 if isinstance(dim0, int) and dim0 > 0 else None
    bs = fixed or batch_size
    outs = []
    for i in range(0, len(images), bs):
        x = np.ascontiguousarray(images[i:i + bs], dtype=np.float32)
        n = len(x)
        if fixed and n < fixed:  # pad the last batch of a fixed-batch model
            x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), np.float32)])
        outs.append(sess.run(None, {inp.name: x})[0][:n])
    if not outs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outs)


def check_parity(model_bytes: bytes, images: np.ndarray, ref_logits: np.ndarray, labels: np.ndarray, *,
                 ep: str = "cpu", atol: float = 1e-4, rtol: float = 1e-3, threads: int = 1,
                 allow_fallback: bool = False) -> ParityReport:
    """Compare ONNX Runtime logits with torch's ``ref_logits`` for the same images.

    Tolerance: ``atol + rtol * max|ref|``: float32 convolutions with BN folded differ from
    torch's unfolded ones by rounding that grows with the logits' scale.
    """
    sess, ep_used = ort_session(model_bytes, ep, allow_fallback=allow_fallback, threads=threads)
    got = ort_logits(sess, images)
    if got.shape != ref_logits.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from torch's {ref_logits.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - ref_logits))) if got.size else 0.0
    tol = atol + rtol * float(np.max(np.abs(ref_logits))) if ref_logits.size else atol
    agree = float(np.mean(got.argmax(1) == ref_logits.argmax(1))) if len(got) else float("nan")
    acc = float(np.mean(got.argmax(1) == labels)) if len(got) else float("nan")
    return ParityReport(ep=ep, ep_used=ep_used, images=len(images), max_abs_diff=diff, tolerance=tol,
                        top1_agreement=agree, onnx_accuracy=acc, passed=bool(np.isfinite(diff) and diff <= tol))


# --------------------------------------------------------------------------- evaluate
def read_metadata(model: str | Path | bytes) -> dict:
    """The ``metadata_props`` of an ONNX file as a dict (empty for a foreign model)."""
    import onnx

    try:
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot read ONNX model {str(model)[:200]!r}: {e}") from None
    return {p.key: p.value for p in proto.metadata_props}


def evaluate_onnx(path: str | Path, dataset: str | None = None, *, ep: str = "cpu", allow_fallback: bool = False,
                  threads: int = 1, batch_size: int = 64, resolution: int | None = None,
                  limit: int | None = None, data_seed: int | None = None, val_fraction: float | None = None,
                  measure_latency: bool = True, latency_warmup: int = 10, latency_runs: int = 50,
                  latency_repeats: int = 3, latency_gap_s: float = 0.5, predictor_fp: dict | None = None) -> dict:
    """Accuracy and measured latency of an exported ONNX model on a dataset's validation split.

    The latency is measured as the profiler measures (paired with the canary of the model's
    space); ``predictor_fp`` (a predictor's fingerprint) supplies the reference to scale it by
    when this machine measured that predictor's data.

    The model's ``metadata_props`` (written by ``export_arch``) supply the resolution, the
    dataset and its split (seed, fraction, limit) unless given here, so a model evaluated on
    its own dataset sees exactly the images its card reports.  A model without metadata
    needs ``resolution`` (or a fixed input shape) and ``dataset``.
    """
    from hwnas.data import load_dataset

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model {str(path)!r} does not exist")
    check_ep(ep)
    model_bytes = path.read_bytes()
    meta = read_metadata(model_bytes)
    sess, ep_used = ort_session(model_bytes, ep, allow_fallback=allow_fallback, threads=threads)
    shape = sess.get_inputs()[0].shape
    if resolution is None:
        if meta.get("resolution"):
            resolution = int(meta["resolution"])
        elif len(shape) == 4 and isinstance(shape[2], int):
            resolution = int(shape[2])
        else:
            raise ExportError(f"{path} carries no resolution metadata and has a dynamic input shape {shape}; "
                              "pass resolution (--resolution)")
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise ExportError(f"{path} names no dataset in its metadata; pass one (--dataset digits)")
    same = dataset == meta.get("dataset")
    if data_seed is None:
        data_seed = int(meta["data_seed"]) if same and meta.get("data_seed") else 0
    if val_fraction is None:
        val_fraction = float(meta["val_fraction"]) if same and meta.get("val_fraction") else 0.2
    if limit is None and same and meta.get("data_limit"):
        limit = int(meta["data_limit"])
    splits = load_dataset(dataset, resolution, seed=data_seed, val_fraction=val_fraction, limit=limit)
    n_out = sess.get_outputs()[0].shape[-1]
    if isinstance(n_out, int) and n_out != splits.num_classes:
        raise ExportError(f"{path} predicts {n_out} classes but dataset {dataset!r} has {splits.num_classes}")
    x = splits.val.tensors[0].numpy()
    y = splits.val.tensors[1].numpy()
    t0 = time.perf_counter()
    logits = ort_logits(sess, x, batch_size=batch_size)
    infer_s = time.perf_counter() - t0
    acc = float(np.mean(logits.argmax(1) == y)) if len(y) else float("nan")
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    loss = float(-np.mean(logp[np.arange(len(y)), y])) if len(y) else float("nan")
    measurement = None
    if measure_latency:
        bs = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
        measurement = _measure(model_bytes, meta, resolution, bs, ep=ep, threads=threads, warmup=latency_warmup,
                               runs=latency_runs, allow_fallback=allow_fallback, repeats=latency_repeats,
                               gap_s=latency_gap_s, predictor_fp=predictor_fp)
    card_acc = meta.get("accuracy")
    return to_jsonable({
        "path": str(path), "dataset": dataset, "images": int(len(y)), "accuracy": acc, "loss": loss,
        "card_accuracy": float(card_acc) if card_acc else None,
        "resolution": resolution, "num_classes": splits.num_classes, "arch": meta.get("arch"),
        "space": meta.get("space"), "ep": ep, "ep_used": ep_used,
        "batch": shape[0] if isinstance(shape[0], int) else "dynamic",
        "throughput_img_s": len(y) / infer_s if infer_s > 0 else None,
        "measured_latency_ms": measurement["latency_ms"] if measurement else None,
        "latency": measurement, "metadata": meta,
    })


def _measure(model_bytes: bytes, meta: dict, resolution: int, batch: int, *, ep, threads, warmup, runs,
             allow_fallback, repeats, gap_s, predictor_fp) -> dict:
    """The profiler's protocol (``hwnas.profiling.protocol``): paired with the canary of the
    model's space, scaled by the predictor's reference where this machine measured its data,
    else by a reference calibrated here.  A model that names no hwnas space is timed plainly
    (there is no canary to pair it with), and the result says so."""
    from hwnas.profiling.protocol import measure_like_data
    from hwnas.space import get_space

    space = meta.get("space")
    try:
        get_space(space) if space else None
    except HwnasError:
        space = None
    if not space:
        from hwnas.profiling.runner import measure

        log.warning("the model names no hwnas space in its metadata: timed without a canary (plain protocol)")
        d = measure(model_bytes, ep=ep, threads=threads, warmup=warmup, runs=runs, allow_fallback=allow_fallback,
                    batch_size=batch, repeats=repeats, gap_s=gap_s).to_dict()
        return {**d, "latency_ms": d["median_ms"], "protocol": "plain"}
    m = measure_like_data(model_bytes, space, resolution, predictor_fp, ep=ep, threads=threads, warmup=warmup,
                          runs=runs, sessions=repeats, gap_s=gap_s, allow_fallback=allow_fallback, batch_size=batch)
    return {**m.to_dict(), "protocol": "canary"}
