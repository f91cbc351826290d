"""Training data for the supernet and for stand-alone training: nothing is downloaded.

Three sources, named by a spec string (``DATASET_HELP``):

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped
  inside scikit-learn, so a fresh machine without internet can train (the embedded
  default of DESIGN.md).  Grey images are upscaled bilinearly to the space's resolution
  and repeated to 3 channels.
- ``cifar10:DIR``: the standard CIFAR-10 *python* folder (``data_batch_1..5``,
  ``test_batch``; pickles with ``b'data'`` of shape (N, 3072) uint8 and ``b'labels'``).
  The train and validation splits both come from the ``data_batch_*`` files; the official
  ``test_batch`` (if present) is kept apart in ``DatasetSplits.test`` for final reporting,
  so architecture rewards never see it.
- ``imagefolder:DIR``: one sub-folder of images per class (torchvision's ImageFolder
  layout), read with PIL and resized to the resolution.

Every split is stratified and seeded (same seed, same split), and images are normalised
per channel with the mean/std of the *training* split only, measured after resizing (so
the training tensor has mean 0 and std 1 at the resolution the network sees).
Channels of grey images are a stride-0 ``expand`` of one plane: 3x less memory, and the
DataLoader's collate materialises each batch.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from hwnas.errors import DataError

log = logging.getLogger(__name__)

DATASET_HELP = (
    "valid datasets: 'digits' (scikit-learn's embedded 8x8 digits), 'cifar10:DIR' (the CIFAR-10 "
    "python folder holding data_batch_1..5 and test_batch), 'imagefolder:DIR' (one sub-folder of "
    "images per class)"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff")
MAX_BYTES = 8 * 2 ** 30  # refuse to hold more than this in memory; ask for ``limit`` instead
_CHUNK = 512


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation tensors (float32 NCHW, normalised; int64 labels)."""

    train: TensorDataset
    val: TensorDataset
    num_classes: int
    name: str
    in_channels: int = 3
    resolution: int = 0
    classes: tuple[str, ...] = ()
    test: TensorDataset | None = None  # cifar10's official test_batch, never used for rewards
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def load_dataset(spec: str, resolution: int, seed: int = 0, val_fraction: float = 0.2,
                 limit: int | None = None, test_fraction: float = 0.0) -> DatasetSplits:
    """Load ``spec`` at ``resolution`` x ``resolution`` with a seeded stratified split.

    ``limit`` caps the number of images used (train + val), drawn class-balanced, so a
    quick run or a test can use a subset.  ``test_fraction`` > 0 holds out that share of a
    dataset without an official test split (digits, image folders) as ``test``: stratified,
    drawn *before* ``limit`` and with a fixed seed, so every run and every search seed is
    scored on the same images, which no reward and no training step ever sees.
    """
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution < 1:
        raise DataError(f"resolution must be a positive integer, got {resolution!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if limit is not None and (int(limit) != limit or limit < 2):
        raise DataError(f"limit must be an integer >= 2 or None, got {limit!r}")
    spec = str(spec)
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        images, labels, classes, test = _digits()
    elif kind == "cifar10" and arg:
        images, labels, classes, test = _cifar10(Path(arg).expanduser())
    elif kind == "imagefolder" and arg:
        images, labels, classes, test = _imagefolder(Path(arg).expanduser(), int(resolution))
    else:
        raise DataError(f"unknown dataset {spec!r}; {DATASET_HELP}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    idx = np.arange(len(labels))
    if test is None and test_fraction > 0:
        keep, held = stratified_split(labels, float(test_fraction), np.random.default_rng(_TEST_SEED))
        test = (images[held], labels[held])
        idx = np.sort(keep)
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(idx):
        idx = idx[_balanced_subset(labels[idx], int(limit), rng)]
    tr, va = stratified_split(labels[idx], float(val_fraction), rng)
    tr, va = idx[tr], idx[va]
    channels = images.shape[1]
    n_out = len(tr) + len(va) + (0 if test is None else len(test[1]))
    nbytes = n_out * channels * resolution ** 2 * 4
    if nbytes > MAX_BYTES:
        raise DataError(
            f"dataset {spec!r} at resolution {resolution} needs {nbytes / 2 ** 30:.1f} GiB in memory "
            f"(more than {MAX_BYTES // 2 ** 30} GiB); pass a smaller resolution or limit=N images"
        )
    grey = images.shape[1] == 3 and _is_grey(images) and (test is None or _is_grey(test[0]))
    planes = 1 if grey else images.shape[1]
    x_train = _resize(images[tr], int(resolution), planes)
    mean = x_train.mean((0, 2, 3)).double()
    std = x_train.std((0, 2, 3)).double() + 1e-6

    def make(x, sel_labels) -> TensorDataset:
        x = x.sub_(mean.float().view(1, planes, 1, 1)).div_(std.float().view(1, planes, 1, 1))
        x = x.expand(-1, 3, -1, -1) if planes == 1 else x
        return TensorDataset(x, torch.as_tensor(np.asarray(sel_labels), dtype=torch.int64))

    train = make(x_train, labels[tr])
    val = make(_resize(images[va], int(resolution), planes), labels[va])
    test_ds = None if test is None else make(_resize(test[0], int(resolution), planes), test[1])
    mean, std = mean.tolist() * (3 // planes), std.tolist() * (3 // planes)
    name = kind if kind == "digits" else spec
    log.info("dataset %s: %d train, %d val images at %dx%d, %d classes", name, len(tr), len(va),
             resolution, resolution, len(classes))
    return DatasetSplits(train, val, len(classes), name, 3, int(resolution), tuple(classes), test_ds,
                         tuple(float(m) for m in mean), tuple(float(s) for s in std))


_TEST_SEED = 20210611  # a fixed seed: one held-out test split for every run and every search seed


def make_loader(dataset: TensorDataset, batch_size: int = 64, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader whose shuffling order depends only on ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last)


def stratified_split(labels: np.ndarray, val_fraction: float, rng: np.random.Generator):
    """Per class, a shuffled ``round(n_c * val_fraction)`` images go to validation (at least
    one when the class has two or more, so every class is seen on both sides)."""
    labels = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _balanced_subset(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """``limit`` indices, taken round-robin over the classes in a seeded order."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = []
    for i in range(max(len(p) for p in per_class)):
        order.extend(int(p[i]) for p in per_class if i < len(p))
    return np.sort(np.array(order[:limit], dtype=np.int64))


def _resize(images: np.ndarray, resolution: int, planes: int) -> torch.Tensor:
    """The first ``planes`` channels of uint8/float NCHW images as float32 at
    ``resolution`` (bilinear), resized in chunks to bound peak memory."""
    n, c, h, w = images.shape
    out = torch.empty(n, planes, resolution, resolution, dtype=torch.float32)
    for i in range(0, n, _CHUNK):
        x = torch.as_tensor(images[i:i + _CHUNK, :planes].astype(np.float32))
        if (h, w) != (resolution, resolution):
            x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                                align_corners=False)
        out[i:i + _CHUNK] = x
    return out


def _is_grey(images: np.ndarray) -> bool:
    return bool(np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2]))


def _digits():
    """scikit-learn's digits, read straight from the CSV it ships (importing
    ``sklearn.datasets`` costs seconds; the file is the same one ``load_digits`` reads)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = None if spec is None or spec.origin is None else Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv is not None and csv.is_file():
        raw = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        pixels, target = raw[:, :-1], raw[:, -1].astype(np.int64)
    else:  # a future layout: fall back to the public loader
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("the 'digits' dataset needs scikit-learn (pip install scikit-learn)") from None
        d = load_digits()
        pixels, target = d.data.astype(np.float32), d.target.astype(np.int64)
    grey = (pixels / 16.0).reshape(-1, 1, 8, 8)
    return np.repeat(grey, 3, axis=1), target, tuple(str(i) for i in range(10)), None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {str(path)!r}: {e}") from None
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"CIFAR-10 batch {str(path)!r} must be a dict with b'data' and b'labels', got {keys}")
    data = np.asarray(obj[b"data"], dtype=np.uint8)
    labels = np.asarray(obj[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(
            f"CIFAR-10 batch {str(path)!r}: b'data' must be (N, 3072) uint8 with N labels, "
            f"got data {data.shape} and {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR-10 batch {str(path)!r}: labels must be 0..9, got {labels.min()}..{labels.max()}")
    return {"data": data.reshape(-1, 3, 32, 32), "labels": labels}


def _cifar10(root: Path):
    if not root.is_dir():
        raise DataError(f"cifar10 folder {str(root)!r} does not exist; {DATASET_HELP}")
    batches = sorted(root.glob("data_batch_[0-9]*"))
    if not batches:
        raise DataError(
            f"cifar10 folder {str(root)!r} holds no data_batch_1..5 files (the CIFAR-10 python "
            f"version, e.g. the extracted cifar-10-batches-py); {DATASET_HELP}"
        )
    parts = [_unpickle(p) for p in batches]
    images = np.concatenate([p["data"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    test = None
    if (root / "test_batch").is_file():
        t = _unpickle(root / "test_batch")
        test = (t["data"], t["labels"])
    classes = tuple(str(i) for i in range(10))
    meta = root / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as f:
                names = pickle.load(f, encoding="bytes").get(b"label_names")
            if names and len(names) == 10:
                classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        except Exception:  # the label names are cosmetic; a bad meta file must not stop training
            log.warning("ignoring unreadable %s", meta)
    return images, labels, classes, test


def _imagefolder(root: Path, resolution: int):
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise DataError(f"imagefolder {str(root)!r} does not exist; {DATASET_HELP}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(ci)
    used = sorted({classes[i] for i in labels})
    if len(used) < 2:
        raise DataError(
            f"imagefolder {str(root)!r} needs at least 2 class sub-folders with images "
            f"({', '.join(IMAGE_SUFFIXES)}); found {len(used)}: {used}"
        )
    empty = [c for c in classes if c not in used]
    if empty:
        log.warning("imagefolder %s: class folders without images ignored: %s", root, empty)
        remap = {classes.index(c): i for i, c in enumerate(used)}
        labels = [remap[i] for i in labels]
        classes = used
    images = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                images[i] = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"imagefolder: cannot read image {str(f)!r}: {e}") from None
    return images, np.asarray(labels, dtype=np.int64), tuple(classes), None
