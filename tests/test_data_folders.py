"""ImageFolder checks (clear errors), seeded transforms and the samplers."""
import os
import random
import shutil

import numpy as np
import pytest
import torch

from train_helpers import make_image_folder, tiny_config
from vheat.data import DatasetError, build_data, build_transforms, check_train_val, image_folder
from vheat.data.loaders import SeededTransformDataset
from vheat.data.samplers import ResumableDistributedSampler, ShardedEvalSampler


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(str(tmp_path / "ds"))


def test_good_tree(folder):
    assert check_train_val(folder) == ["ant", "bee", "cat"]


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*train"):
        check_train_val(str(tmp_path / "nope"))


def test_missing_split(folder):
    shutil.rmtree(os.path.join(folder, "val"))
    with pytest.raises(DatasetError, match=r"val.*is missing"):
        check_train_val(folder)


def test_empty_split(folder):
    shutil.rmtree(os.path.join(folder, "train"))
    os.makedirs(os.path.join(folder, "train"))
    with pytest.raises(DatasetError, match="is empty"):
        check_train_val(folder)


def test_class_without_images(folder):
    for f in os.listdir(os.path.join(folder, "train", "bee")):
        os.unlink(os.path.join(folder, "train", "bee", f))
    with open(os.path.join(folder, "train", "bee", "notes.txt"), "w") as f:
        f.write("not an image")
    with pytest.raises(DatasetError, match="without images.*bee"):
        check_train_val(folder)


def test_class_mismatch(folder):
    os.rename(os.path.join(folder, "val", "cat"), os.path.join(folder, "val", "dog"))
    with pytest.raises(DatasetError, match=r"class mismatch.*only in train: \['cat'\].*only in val: \['dog'\]"):
        check_train_val(folder)


def test_corrupt_image_named(folder):
    bad = os.path.join(folder, "val", "bee", "1.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    ds = image_folder(folder, "val")
    idx = [i for i, (p, _) in enumerate(ds.samples) if p == bad][0]
    with pytest.raises(DatasetError, match=r"cannot read image .*bee/1\.png"):
        ds[idx]


def test_seeded_transform_reproducible_and_isolated(folder, tmp_path):
    cfg = tiny_config(folder, str(tmp_path / "out"), "aug.enabled=true", "aug.re_prob=0.5",
                      "aug.auto_augment=rand-m9-mstd0.5-inc1")
    ds = SeededTransformDataset(image_folder(folder, "train"), build_transforms(cfg, True), seed=3)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    a = ds[(2, 0)][0]
    after = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    expected = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]  # caller's RNGs untouched
    assert torch.equal(a, ds[(2, 0)][0])  # same (epoch, index): same augmentation
    others = [ds[(2, e)][0] for e in range(1, 6)]
    assert any(not torch.equal(a, o) for o in others)  # a new epoch draws new augmentations


@pytest.mark.parametrize("n, world, batch", [(37, 2, 4), (40, 4, 2), (11, 3, 1)])
def test_resumable_sampler_shards_are_the_single_process_batches(n, world, batch):
    data = list(range(n))
    single = ResumableDistributedSampler(data, 1, 0, seed=9)
    single.set_epoch(4)
    order = [i for i, e in single]
    assert all(e == 4 for _, e in single)
    shards = []
    for r in range(world):
        s = ResumableDistributedSampler(data, world, r, seed=9)
        s.set_epoch(4)
        shards.append([i for i, _ in s])
    steps = min(len(s) for s in shards) // batch
    for k in range(steps):
        union = sorted(i for s in shards for i in s[k * batch:(k + 1) * batch])
        assert union == sorted(order[k * batch * world:(k + 1) * batch * world])
    s = ResumableDistributedSampler(data, world, 1, seed=9)
    s.set_epoch(4)
    s.set_start(batch)
    assert [i for i, _ in s] == shards[1][batch:] and len(s) == len(shards[1]) - batch


@pytest.mark.parametrize("n, world", [(10, 3), (7, 1), (2, 4)])
def test_sharded_eval_sampler_counts_each_once(n, world):
    shards = [list(ShardedEvalSampler(range(n), world, r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ShardedEvalSampler(range(n), world, r)) for r in range(world)] == [len(s) for s in shards]


def test_too_small_for_a_global_batch(folder, tmp_path):
    cfg = tiny_config(folder, str(tmp_path / "out"), "data.batch_size=64")
    with pytest.raises(DatasetError, match="fewer than one global batch"):
        build_data(cfg, folder, 0, 1)


def _corrupt(path):
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))


def test_image_check_is_cached_per_folder(folder, tmp_path, monkeypatch):
    from vheat.data import verify

    monkeypatch.setenv("VHEAT_CACHE_DIR", str(tmp_path / "cache"))
    opened = []
    real = verify.check_image
    monkeypatch.setattr(verify, "check_image", lambda p: opened.append(p) or real(p))
    ds = image_folder(folder, "train")
    assert verify.verify_dataset(ds, "fail") == 0 and len(opened) == len(ds.samples) == 24
    opened.clear()
    assert verify.verify_dataset(image_folder(folder, "train"), "fail") == 0 and opened == []  # all cached
    bad = os.path.join(folder, "train", "cat", "3.png")
    _corrupt(bad)
    with pytest.raises(DatasetError, match=rf"1 of 24 images in .*train cannot be read: {bad} .*verify_images=skip"):
        verify.verify_dataset(image_folder(folder, "train"), "fail")
    assert opened == [bad]  # only the changed file was decoded again


def test_skip_drops_unreadable_images_with_a_count(folder, tmp_path, monkeypatch, caplog):
    from vheat.data import verify

    monkeypatch.setenv("VHEAT_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("1.png", "2.png"):
        _corrupt(os.path.join(folder, "train", "bee", name))
    ds = image_folder(folder, "train")
    with caplog.at_level("WARNING", logger="vheat.data"):
        assert verify.verify_dataset(ds, "skip") == 2
    assert "skipping 2 unreadable image(s)" in caplog.text
    assert len(ds) == 22 and len(ds.targets) == 22 and not [p for p, _ in ds.samples if p.endswith("bee/1.png")]
    assert all(ds[i][0].size == (16, 16) for i in range(len(ds)))  # every remaining image loads
    assert verify.verify_dataset(image_folder(folder, "train"), "off") == 0
