"""One-file persistence of a fitted predictor: a zip named ``*.hwp``.

Members: ``meta.json`` (format version, hwnas version, model name and hyper-parameters,
space name and its decisions' choices, encoding, resolution, device id and fingerprint,
training-set size, held-out metrics, the training archs' latencies), ``arrays.npz`` (numpy
arrays, loaded without pickle), ``state.json`` (scalars) and ``blob/<name>`` (opaque bytes:
an XGBoost JSON model, or a pickled scikit-learn estimator: load only files you trust).

Why record the space's choices and the device fingerprint: a latency model is valid for
one space and one device; ``load_predictor`` refuses another unless forced.
"""
from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from pathlib import Path

import numpy as np

from hwnas import __version__, jsonutil
from hwnas.errors import PredictorError, SpaceError
from hwnas.space import SearchSpace, get_space

from hwnas.predictors._encoding import Encoding
from hwnas.predictors._registry import create_predictor

log = logging.getLogger(__name__)
FORMAT = "hwnas-predictor/1"


def save_predictor(pred, path) -> None:
    """Write ``predictor_bytes(pred)`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    data = predictor_bytes(pred)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def predictor_bytes(pred) -> bytes:
    """A fitted predictor as the bytes of a ``.hwp`` file (an adapted predictor embeds its base so)."""
    pred._check_fitted()
    arrays, blobs, scalars = {}, {}, {}
    for k, v in pred._state().items():
        if isinstance(v, np.ndarray):
            arrays[k] = v
        elif isinstance(v, (bytes, bytearray)):
            blobs[k] = bytes(v)
        else:
            scalars[k] = v
    arrays["__train_latency_ms"] = np.asarray(pred.train_latency_ms_)
    arrays["__residuals"] = np.asarray(getattr(pred, "residuals_", np.zeros(0)), dtype=np.float64)
    meta = {
        "format": FORMAT, "hwnas_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": pred.name, "params": pred.get_params(), "space": pred.space_name,
        "decisions": [list(d.choices) for d in pred.space.decisions], "encoding": pred.encoding,
        "resolution": pred.encoding_.table.resolutions[0] if not pred.space.searchable_resolution else None,
        "n_features": pred.encoding_.n_features, "device_id": pred.device_id, "device_name": pred.device_name, "fingerprint": pred.fingerprint,
        "n_train": pred.n_train_, "metrics": pred.metrics_, "train_archs": list(pred.train_archs_),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.json", jsonutil.dumps(meta, indent=1))
        z.writestr("state.json", jsonutil.dumps(scalars))
        z.writestr("arrays.npz", buf.getvalue())
        for k, v in blobs.items():
            z.writestr(f"blob/{k}", v)
    return out.getvalue()


def read_meta(path) -> dict:
    """The ``meta.json`` of a saved predictor (cheap: no model is built)."""
    with _open(path) as z:
        return json.loads(z.read("meta.json"))


def load_predictor(path, space: SearchSpace | str | None = None, fingerprint: dict | None = None,
                   force: bool = False):
    """Load a ``.hwp`` file (a path, or its bytes); refuse another space or device
    fingerprint unless ``force``."""
    if isinstance(path, (bytes, bytearray)):
        path = io.BytesIO(path)
    with _open(path) as z:
        meta = json.loads(z.read("meta.json"))
        scalars = json.loads(z.read("state.json"))
        with np.load(io.BytesIO(z.read("arrays.npz")), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        blobs = {n[5:]: z.read(n) for n in z.namelist() if n.startswith("blob/")}
    sp = _resolve_space(path, meta, space, force)
    _check_fingerprint(path, meta, fingerprint, force)
    pred = create_predictor(meta["model"], sp, **_known_params(meta))
    pred.encoding_ = Encoding(sp, pred.encoding, meta.get("resolution") if not sp.searchable_resolution else None)
    train_y = arrays.pop("__train_latency_ms")
    pred.residuals_ = arrays.pop("__residuals", np.zeros(0))  # absent in files older than the uncertainty estimate
    pred._set_state({**arrays, **blobs, **scalars})
    pred.n_train_ = int(meta["n_train"])
    pred.train_archs_ = tuple(meta.get("train_archs", ()))
    pred.train_latency_ms_ = train_y
    pred.metrics_ = dict(meta.get("metrics") or {})
    pred.device_id = meta.get("device_id")
    pred.fingerprint = meta.get("fingerprint")
    pred.device_name = meta.get("device_name")
    return pred


def _known_params(meta: dict) -> dict:
    """The saved hyper-parameters this version still has (a renamed or dropped one, from a
    file written by an older hwnas, is left out with a note rather than refused)."""
    from hwnas.predictors._registry import predictor_class

    valid = set(predictor_class(meta["model"]).param_names())
    dropped = sorted(set(meta["params"]) - valid)
    if dropped:
        log.info("predictor file from hwnas %s: ignoring parameters this version does not have: %s",
                 meta.get("hwnas_version"), ", ".join(dropped))
    return {k: v for k, v in meta["params"].items() if k in valid}


def _open(path) -> zipfile.ZipFile:
    if not isinstance(path, io.BytesIO):
        path = Path(path)
        if not path.is_file():
            raise PredictorError(f"no predictor file at {str(path)!r}")
    try:
        z = zipfile.ZipFile(path)
        meta = json.loads(z.read("meta.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise PredictorError(f"{str(path)!r} is not a hwnas predictor file (.hwp): {e}") from None
    if meta.get("format") != FORMAT:
        raise PredictorError(f"{str(path)!r} has format {meta.get('format')!r}; this hwnas reads {FORMAT!r}")
    return z


def _resolve_space(path, meta, space, force) -> SearchSpace:
    saved = meta["space"]
    if space is not None:
        sp = get_space(space) if isinstance(space, str) else space
        if sp.name != saved:
            msg = f"predictor {str(path)!r} was trained for space {saved!r}, not {sp.name!r}"
            if not force:
                raise PredictorError(msg + " (use --force / force=True to load it anyway)")
            log.warning("%s; loading anyway (forced) for its own space", msg)
            sp = None
    else:
        sp = None
    if sp is None:
        try:
            sp = get_space(saved)
        except SpaceError as e:
            raise PredictorError(f"predictor {str(path)!r} needs space {saved!r}, which is not available: {e}; "
                                 "pass space=<SearchSpace> (or --space FILE.yaml)") from None
    if [list(d.choices) for d in sp.decisions] != meta["decisions"]:
        msg = (f"space {sp.name!r} has changed since predictor {str(path)!r} was trained "
               "(its decisions or choices differ)")
        if not force:
            raise PredictorError(msg)
        raise PredictorError(msg + "; cannot load it even with --force: its features no longer line up")
    return sp


def fingerprint_diff(a: dict, b: dict) -> list[str]:
    """Fields that change measured numbers and differ (host name, Python version do not count)."""
    from hwnas.profiling.fingerprint import ID_FIELDS, EXTRA_ID_FIELDS

    # a newer field counts where both sides record it (an older fingerprint lacks it)
    fields = ID_FIELDS + tuple(k for k in EXTRA_ID_FIELDS if a.get(k) is not None and b.get(k) is not None)
    diff = sorted(k for k in fields if a.get(k) != b.get(k))
    if not diff and a.get("device_id") and b.get("device_id") and a["device_id"] != b["device_id"]:
        diff = ["device_id"]
    return diff


def _check_fingerprint(path, meta, fingerprint, force) -> None:
    """Same device?  Compare the number-changing fields where both sides have them, else the
    device ids (a hash of those fields); if neither side can tell, warn and go on."""
    if fingerprint is None:
        return
    saved = meta.get("fingerprint") or {}
    saved_id = meta.get("device_id") or saved.get("device_id")
    given_id = fingerprint.get("device_id")
    if saved and any(k in fingerprint for k in ("cpu_model", "ep", "threads")):
        diff = fingerprint_diff(saved, fingerprint)
        shown = "; ".join(f"{k}: {saved.get(k)!r} != {fingerprint.get(k)!r}" for k in diff[:4])
    elif saved_id and given_id:
        diff = [] if saved_id == given_id else ["device_id"]
        shown = f"device id {saved_id!r} != {given_id!r}"
    else:
        log.warning("predictor %s or the data records no device; cannot check that they match", path)
        return
    if diff:
        msg = f"predictor {str(path)!r} was trained on another device ({shown})"
        if not force:
            raise PredictorError(msg + "; use --force / force=True to use it anyway")
        from hwnas.profiling.fingerprint import describe_side_by_side

        log.warning("%s; using it anyway (forced):\n%s", msg,
                    describe_side_by_side(saved or {"device_id": saved_id}, fingerprint,
                                          labels=("predictor", "data")))
