"""Checkpoints: a run stopped mid-epoch and resumed ends bitwise equal to an uninterrupted run."""
import os

import pytest
import torch

from train_helpers import make_image_folder, tiny_config
from vheat.train.checkpoint import (CheckpointFormatError, find_resume_point, list_checkpoints, read_checkpoint,
                                    save_checkpoint)
from vheat.train.trainer import train

# Augmentation, Mixup / CutMix and drop path all on: every RNG stream has to come back.
RANDOM = ["aug.enabled=true", "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.re_prob=0.5", "aug.hflip=0.5",
          "aug.mixup=0.8", "aug.cutmix=1.0", "aug.label_smoothing=0.1", "model.drop_path_rate=0.2",
          "train.deterministic=true", "train.epochs=2", "train.warmup_epochs=1"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("ds")), n_train=7, n_val=3)


def _weights(out):
    ckpt = read_checkpoint(list_checkpoints(out)[-1])
    return ckpt["model"], ckpt["model_ema"], ckpt["optimizer"]["state"]


def _assert_same(a, b):
    for sa, sb in zip(a[:2], b[:2]):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    for i in a[2]:
        for k in a[2][i]:
            assert torch.equal(a[2][i][k], b[2][i][k]), (i, k)


def test_stop_mid_epoch_then_resume_is_bitwise_identical(folder, tmp_path):
    # 21 images / batch 4 -> 5 steps per epoch, 10 in all; stop at 7 = epoch 2, step 2.
    full = str(tmp_path / "full")
    summary = train(tiny_config(folder, full, *RANDOM))
    assert summary["status"] == "finished" and summary["global_step"] == 10

    part = str(tmp_path / "part")
    stopped = train(tiny_config(folder, part, *RANDOM, "train.stop_after_steps=7"))
    assert stopped["status"] == "stopped" and stopped["global_step"] == 7
    ckpt = read_checkpoint(stopped["checkpoint"])
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 2, 7)
    resumed = train(tiny_config(folder, part, *RANDOM))  # auto-resume from the output folder
    assert resumed["status"] == "finished" and resumed["global_step"] == 10
    _assert_same(_weights(full), _weights(part))
    assert resumed["val"]["acc1"] == summary["val"]["acc1"]


def test_explicit_resume_with_accumulation_and_mid_epoch_saves(folder, tmp_path):
    opts = ["train.accumulation_steps=2", "train.save_every_steps=1", "train.keep_checkpoints=0",
            "train.deterministic=true", "aug.enabled=true", "model.drop_path_rate=0.1"]
    full = str(tmp_path / "full")
    train(tiny_config(folder, full, *opts))  # 2 steps per epoch, 4 in all
    mid = [p for p in list_checkpoints(full) if read_checkpoint(p)["step_in_epoch"] > 0]
    assert mid, list_checkpoints(full)
    other = str(tmp_path / "other")
    train(tiny_config(folder, other, *opts, "train.auto_resume=false"), resume=mid[0])
    _assert_same(_weights(full), _weights(other))


def test_resume_point_skips_torn_files(folder, tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(folder, out, "train.epochs=1"))
    good, _, skipped = find_resume_point(out)
    assert good.endswith("step00000005.pth") and skipped == []
    torn = os.path.join(out, "checkpoint-ep0002-step00000099.pth")
    with open(torn, "wb") as f:
        f.write(b"PK\x03\x04 torn")  # what a non-atomic writer could leave behind
    path, _, skipped = find_resume_point(out)
    assert path == good and [p for p, _ in skipped] == [torn] and "truncated or damaged" in skipped[0][1]
    assert os.path.exists(torn)  # finding changes nothing; the trainer renames it once it resumes
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_keep_prunes_old_checkpoints(tmp_path):
    out = str(tmp_path)
    for step in range(1, 5):
        save_checkpoint(out, {"epoch": step, "global_step": step, "optimizer": {}}, keep=2)
    assert [os.path.basename(p) for p in list_checkpoints(out)] == [
        "checkpoint-ep0003-step00000003.pth", "checkpoint-ep0004-step00000004.pth"]


def test_resume_from_other_architecture_is_clear(folder, tmp_path):
    out = str(tmp_path / "a")
    train(tiny_config(folder, out, "train.epochs=1"))
    wider = tiny_config(folder, str(tmp_path / "b"), "model.kwargs={depths: [1, 1], dims: 12}")
    with pytest.raises(CheckpointFormatError, match=r"does not fit model 'vheat_tiny'.*shape mismatches"):
        train(wider, resume=list_checkpoints(out)[-1])


def test_resume_from_missing_or_garbage_file(folder, tmp_path):
    cfg = tiny_config(folder, str(tmp_path / "c"))
    with pytest.raises(CheckpointFormatError, match="not found"):
        train(cfg, resume=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="is not a checkpoint: it holds text"):
        train(cfg, resume=str(junk))


def test_resume_keeps_the_runs_gemm_library(folder, tmp_path):
    from vheat.checkpoint_io import write_checkpoint
    from vheat.models import linear

    if not linear.onednn_available():
        pytest.skip("torch built without oneDNN: every run trains on F.linear")
    part = str(tmp_path / "part")
    stopped = train(tiny_config(folder, part, "train.epochs=2", "train.stop_after_steps=3"))
    ckpt = read_checkpoint(stopped["checkpoint"])
    assert ckpt["gemm_library"] in ("onednn", "mkl")
    other = "mkl" if ckpt["gemm_library"] == "onednn" else "onednn"
    ckpt["gemm_library"] = other  # as if the run had started in a process that measured otherwise
    write_checkpoint(stopped["checkpoint"], ckpt)
    linear.pin_training_library(None)  # this "process" has its own calibration again
    resumed = train(tiny_config(folder, part, "train.epochs=2"))
    assert resumed["status"] == "finished"
    assert linear.training_library() == other == read_checkpoint(list_checkpoints(part)[-1])["gemm_library"]
