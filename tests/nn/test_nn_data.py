import pickle

import numpy as np
import pytest
import torch

from hwnas.data import DATASET_HELP, DatasetSplits, load_dataset, make_loader
from hwnas.errors import DataError


def test_digits_shapes_split_and_normalisation():
    s = load_dataset("digits", 32, seed=0)
    assert isinstance(s, DatasetSplits)
    assert (s.name, s.num_classes, s.in_channels, s.resolution) == ("digits", 10, 3, 32)
    xt, yt = s.train.tensors
    xv, yv = s.val.tensors
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert xt.shape[1:] == (3, 32, 32) and xv.shape[1:] == (3, 32, 32)
    assert len(yt) + len(yv) == 1797
    assert abs(len(yv) / 1797 - 0.2) < 0.01
    # stratified: every class is on both sides in about the same proportion
    assert set(yv.tolist()) == set(range(10)) == set(yt.tolist())
    frac = np.bincount(yv.numpy(), minlength=10) / np.bincount(np.r_[yt.numpy(), yv.numpy()], minlength=10)
    assert np.all(np.abs(frac - 0.2) < 0.03)
    # normalised with training statistics; grey repeated on the 3 channels
    assert abs(float(xt.mean())) < 0.05 and abs(float(xt.std()) - 1) < 0.1
    assert torch.equal(xt[5, 0], xt[5, 2])
    # images and labels stay aligned through split and resize: a nearest-class-mean
    # classifier built on train is accurate on val
    centroids = torch.stack([xt[yt == c, 0].flatten(1).mean(0) for c in range(10)])
    pred = torch.cdist(xv[:, 0].flatten(1), centroids).argmin(1)
    assert float((pred == yv).float().mean()) > 0.8


def test_digits_are_scikit_learns():
    """``digits`` reads the CSV scikit-learn ships, without importing sklearn.datasets."""
    from sklearn.datasets import load_digits

    from hwnas.data import _digits

    images, labels, classes, test = _digits()
    d = load_digits()
    assert np.array_equal(images[:, 0] * 16, d.images) and np.array_equal(labels, d.target)
    assert images.shape == (1797, 3, 8, 8) and classes == tuple("0123456789") and test is None


def test_digits_is_seeded_and_limit_is_balanced():
    a = load_dataset("digits", 16, seed=3, limit=200)
    b = load_dataset("digits", 16, seed=3, limit=200)
    c = load_dataset("digits", 16, seed=4, limit=200)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.val.tensors[1], b.val.tensors[1])
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])
    assert len(a.train) + len(a.val) == 200
    counts = np.bincount(np.r_[a.train.tensors[1].numpy(), a.val.tensors[1].numpy()], minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21


def test_make_loader_order_depends_only_on_seed():
    s = load_dataset("digits", 8, limit=100)
    ys = [torch.cat([y for _, y in make_loader(s.train, 16, seed=k)]) for k in (1, 1, 2)]
    assert torch.equal(ys[0], ys[1]) and not torch.equal(ys[0], ys[2])
    x, _ = next(iter(make_loader(s.train, 16)))
    assert x.shape == (16, 3, 8, 8) and x.is_contiguous()


def _write_batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": list(labels), b"batch_label": b"fake"}, f)


@pytest.fixture
def fake_cifar(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in (1, 2):
        labels = np.arange(50) % 10
        data = rng.integers(0, 256, size=(50, 3072), dtype=np.uint8)
        data[:, :1024] = (labels * 20)[:, None]  # red plane encodes the class
        _write_batch(root / f"data_batch_{i}", data, labels)
    _write_batch(root / "test_batch", rng.integers(0, 256, size=(20, 3072), dtype=np.uint8), np.arange(20) % 10)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    return root


def test_cifar10_folder(fake_cifar):
    s = load_dataset(f"cifar10:{fake_cifar}", 32, seed=0, val_fraction=0.2)
    assert s.num_classes == 10 and s.classes[0] == "airplane" and s.classes[-1] == "truck"
    assert len(s.train) == 80 and len(s.val) == 20 and len(s.test) == 20
    x, y = s.train.tensors
    assert x.shape == (80, 3, 32, 32)
    # normalised per channel with training statistics
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    # the class really is carried through: red plane is monotone in the label
    red = x[:, 0].mean((1, 2))
    assert torch.all(red[y == 9] > red[y == 0].max())
    up = load_dataset(f"cifar10:{fake_cifar}", 48, seed=0)
    assert up.train.tensors[0].shape == (80, 3, 48, 48)
    assert torch.equal(up.train.tensors[1], y)


def test_cifar10_bad_folders(tmp_path, fake_cifar):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data_batch_1..5"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}", 32)
    (fake_cifar / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset(f"cifar10:{fake_cifar}", 32)
    (fake_cifar / "data_batch_3").unlink()
    _write_batch(fake_cifar / "data_batch_3", np.zeros((4, 100), np.uint8), [0, 1, 2, 3])
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        load_dataset(f"cifar10:{fake_cifar}", 32)


def test_imagefolder(tmp_path):
    from PIL import Image

    colours = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for name, rgb in colours.items():
        (tmp_path / name).mkdir()
        for i in range(5):
            arr = np.zeros((12 + i, 10, 3), np.uint8) + np.array(rgb, np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    s = load_dataset(f"imagefolder:{tmp_path}", 8, seed=1, val_fraction=0.4)
    assert s.classes == ("blue", "green", "red") and s.num_classes == 3
    assert len(s.train) == 9 and len(s.val) == 6
    x, y = s.train.tensors
    assert x.shape == (9, 3, 8, 8)
    # each class's dominant channel is its colour (labels follow the sorted folder names)
    for label, channel in ((0, 2), (1, 1), (2, 0)):
        means = x[y == label].mean((0, 2, 3))
        assert int(means.argmax()) == channel


def test_imagefolder_errors(tmp_path):
    from PIL import Image

    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'x'}", 8)
    (tmp_path / "only").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DataError, match="at least 2 class"):
        load_dataset(f"imagefolder:{tmp_path}", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path}", 8)


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "cifar10:", "imagefolder:", "digits:extra", ""])
def test_unknown_specs_list_the_valid_ones(spec):
    with pytest.raises(DataError) as e:
        load_dataset(spec, 32)
    assert DATASET_HELP in str(e.value) and repr(spec) in str(e.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 0}, "resolution"), ({"resolution": 32, "val_fraction": 1.0}, "val_fraction"),
    ({"resolution": 32, "limit": 1}, "limit"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_dataset("digits", **kwargs)
