"""The built-in digits dataset: export, split, content, idempotence and repair."""
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from vheat.data import check_train_val, export_digits


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    return export_digits(str(tmp_path_factory.mktemp("digits") / "digits-24"), size=24)


def _files(root, split):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, split)) for f in fs)


def test_split_sizes_classes_and_disjointness(digits_root):
    assert check_train_val(digits_root) == [str(c) for c in range(10)]
    train, val = _files(digits_root, "train"), _files(digits_root, "val")
    assert (len(train), len(val)) == (1437, 360)
    ids = lambda files: {os.path.basename(f) for f in files}  # noqa: E731  (file name = source index)
    assert not ids(train) & ids(val)
    assert len(ids(train) | ids(val)) == 1797
    # stratified: every class holds 16-20 % of its images in val
    for c in range(10):
        n_val = len(os.listdir(os.path.join(digits_root, "val", str(c))))
        n_train = len(os.listdir(os.path.join(digits_root, "train", str(c))))
        assert 0.16 <= n_val / (n_val + n_train) <= 0.24


def test_images_match_sklearn_digits(digits_root):
    digits = load_digits()
    rng = np.random.default_rng()
    files = _files(digits_root, "val") + _files(digits_root, "train")
    for path in rng.choice(files, size=25, replace=False):
        index = int(os.path.basename(path)[:-4])
        assert int(os.path.basename(os.path.dirname(path))) == digits.target[index]
        img = Image.open(path)
        assert img.mode == "RGB" and img.size == (24, 24)
        arr = np.asarray(img, dtype=np.float64)
        assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        # box-downsample back to 8x8 and compare with the source (values 0..16 -> 0..255)
        down = arr[..., 0].reshape(8, 3, 8, 3).mean(axis=(1, 3))
        corr = np.corrcoef(down.ravel(), digits.images[index].ravel())[0, 1]
        assert corr > 0.9, (path, corr)


def test_reuse_and_repair(digits_root):
    probe = _files(digits_root, "train")[0]
    before = os.stat(probe).st_mtime_ns
    assert export_digits(digits_root, size=24) == digits_root
    assert os.stat(probe).st_mtime_ns == before  # complete tree reused, not rewritten
    victim = _files(digits_root, "val")[-1]
    os.unlink(victim)  # an incomplete tree is rebuilt as a whole
    export_digits(digits_root, size=24)
    assert os.path.exists(victim) and len(_files(digits_root, "val")) == 360
    assert not [n for n in os.listdir(os.path.dirname(digits_root)) if n.startswith(".")]  # no temp left


def test_bad_size_rejected(tmp_path):
    with pytest.raises(ValueError, match="size"):
        export_digits(str(tmp_path / "d"), size=4)
