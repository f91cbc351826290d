"""Training data for predictors: from a latency store, or from a CSV file.

A CSV has a header with at least ``arch`` and ``latency_ms`` (lines starting with ``#`` are
comments, as for ``hwnas data import``; extra columns are ignored,
except ``device_id`` and ``fingerprint`` (JSON) which, when present and the same on every
row, are recorded; a ``# fingerprint <id> <JSON>`` comment line, as ``hwnas data export``
writes, gives the fingerprint, with the canary reference, too).  Every arch must parse in the given space and every latency must be
finite and > 0: a predictor trained on a NaN or a zero would be silently wrong.
Duplicate archs are merged by their median (a campaign may be re-run).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import DataError
from hwnas.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyData:
    """Measured latencies of one space (mirrors ``hwnas.profiling.store.LatencyDataset``)."""

    space: str
    archs: tuple[str, ...]
    latency_ms: np.ndarray
    device_id: str | None = None
    fingerprint: dict | None = field(default=None)
    source: str = ""
    device_name: str | None = None

    def __len__(self) -> int:
        return len(self.archs)

    def subset(self, rows) -> "LatencyData":
        rows = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(self, archs=tuple(self.archs[i] for i in rows), latency_ms=self.latency_ms[rows])


def read_latency_csv(path, space: SearchSpace) -> LatencyData:
    """A latency CSV (validated by ``hwnas.profiling.transfer.read_latency_records``)."""
    from hwnas.profiling.transfer import read_csv_fingerprints, read_latency_records

    path = Path(path)
    if not path.is_file():
        raise DataError(f"latency CSV not found: {str(path)!r}")
    records = read_latency_records(space, path)
    devs = {r["device_id"] for _, _, r, _ in records if r.get("device_id")}
    if len(devs) > 1:
        raise DataError(f"{str(path)!r} mixes devices {sorted(devs)}; split it per device")
    fps = {r["fingerprint"] for _, _, r, _ in records if r.get("fingerprint")}
    names = {r["device_name"] for _, _, r, _ in records if r.get("device_name")}
    fingerprint = json.loads(fps.pop()) if len(fps) == 1 else None
    header = read_csv_fingerprints(path)  # '# fingerprint' lines of 'hwnas data export'
    if fingerprint is None and len(header) == 1 and (not devs or devs == set(header)):
        fingerprint = next(iter(header.values()))
    device_id = devs.pop() if devs else (fingerprint or {}).get("device_id")
    name = names.pop() if len(names) == 1 else None
    archs = tuple(a for a, _, _, _ in records)
    latency = np.asarray([y for _, y, _, _ in records], dtype=np.float64)
    return merge_duplicates(LatencyData(space.name, archs, latency, device_id, fingerprint, str(path), name))


def load_store_data(db, space: SearchSpace, device: str | None = None) -> LatencyData:
    """``LatencyStore(db).dataset(space, device)`` as ``LatencyData``."""
    from hwnas.profiling.store import LatencyStore

    if not Path(db).is_file():
        raise DataError(f"latency database not found: {str(db)!r}")
    with LatencyStore(db, create=False) as store:
        ds = store.dataset(space.name, device)
        name = next((d["name"] for d in store.devices() if d["id"] == ds.device_id), None)
    return merge_duplicates(LatencyData(ds.space, tuple(ds.archs), np.asarray(ds.latency_ms, dtype=np.float64),
                                        ds.device_id, dict(ds.fingerprint or {}) or None, str(db), name))


def merge_duplicates(data: LatencyData) -> LatencyData:
    uniq = list(dict.fromkeys(data.archs))
    if len(uniq) == len(data.archs):
        return data
    groups: dict[str, list[float]] = {}
    for a, y in zip(data.archs, data.latency_ms):
        groups.setdefault(a, []).append(float(y))
    log.info("%s: merged %d duplicate rows by their median", data.source, len(data.archs) - len(uniq))
    return dataclasses.replace(data, archs=tuple(uniq), latency_ms=np.array([np.median(groups[a]) for a in uniq]))


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/test row indices; at least 2 rows on each side."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(n * test_fraction))
    if n_test < 2 or n - n_test < 2:
        raise DataError(f"too little data to hold out {test_fraction:.0%}: {n} archs leave {n - n_test} to train "
                        f"and {n_test} to test (need at least 2 each)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
