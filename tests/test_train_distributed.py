"""Two processes (torchrun, gloo on CPU) train to the same weights as one process with the same global batch,
and end together when rank 0 cannot write."""
import json
import os
import resource
import time
import subprocess
import sys

import pytest
import torch
import yaml

from train_helpers import make_image_folder, snapshot, tiny_config
from vheat.train import distributed as du
from vheat.train.checkpoint import list_checkpoints, read_checkpoint
from vheat.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torchrun(nproc, config_path, *args, command="train", timeout=240, **popen):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "vheat", command, "-c", config_path, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **popen)


@pytest.mark.slow  # ~25 s unloaded (three interpreters start torch + timm), more on a busy machine
@pytest.mark.usefixtures("one_thread")
def test_two_processes_match_one_process(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"), n_train=8, n_val=3)  # 24 images: 6 global batches of 4
    # Randomness that differs per rank (drop path, Mixup) is off; augmentation is seeded per sample,
    # so it stays on and must come out identical however the batch is split.
    opts = ["train.epochs=2", "train.warmup_epochs=1", "aug.enabled=true", "aug.auto_augment=rand-m9-mstd0.5-inc1"]
    single = str(tmp_path / "one")
    summary = train(tiny_config(folder, single, *opts))

    cfg2 = tiny_config(folder, str(tmp_path / "two"), *opts, "data.batch_size=2")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg2))
    proc = _torchrun(2, str(path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "global batch 4" in proc.stdout
    assert proc.stdout.count("epoch 2/2:") == 1  # only rank 0 logs

    one, two = (read_checkpoint(list_checkpoints(d)[-1]) for d in (single, cfg2["output"]))
    assert one["global_step"] == two["global_step"] == 12 and two["world_size"] == 2
    for key in ("model", "model_ema"):
        for name, a in one[key].items():
            b = two[key][name]
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")
    # the weights did change between the epochs (two untouched initialisations would prove nothing)
    first = read_checkpoint(list_checkpoints(single)[0])["model"]
    assert any(not torch.equal(first[k], v) for k, v in one["model"].items())
    assert summary["val"]["count"] == 9

    # sharded evaluation over 2 processes counts every image once and agrees with one process
    report = tmp_path / "eval.json"
    proc = _torchrun(2, str(path), "--checkpoint", list_checkpoints(single)[-1], "--json", str(report),
                     command="eval")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(report.read_text())
    assert got["model"]["count"] == 9 and proc.stdout.count("model: top-1") == 1
    assert got["model"]["acc1"] == pytest.approx(summary["val"]["acc1"])
    assert got["model"]["loss"] == pytest.approx(summary["val"]["loss"], rel=1e-5)
    assert got["ema"]["acc1"] == pytest.approx(summary["ema_val"]["acc1"])


@pytest.mark.usefixtures("one_thread")
def test_a_failed_write_on_rank_0_ends_every_rank(tmp_path):
    """best.pth cannot be written (file size limit). Rank 1 used to go on to its next collective alone:
    with gloo on one host it died with a "Connection closed by peer" traceback once rank 0 exited (NCCL
    ranks wait for the process group's timeout). Now both ranks end with the one-line error, exit code 2;
    torchrun's own failure summary follows. ~25 s: one torchrun of two processes."""
    folder = make_image_folder(str(tmp_path / "ds"), n_train=4, n_val=2)
    cfg = tiny_config(folder, str(tmp_path / "run"), "data.batch_size=2", "train.epochs=1")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    limit = 40000  # the config and the log fit; a checkpoint of even this model does not
    start = time.monotonic()
    proc = _torchrun(2, str(path), timeout=150,
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vheat: error:")]
    assert len(errors) == 2, proc.stderr[-3000:]  # each rank, the same line
    assert all(f"cannot write {cfg['output']}/best.pth: it exceeds the file size limit" in e for e in errors)
    assert "Traceback" not in proc.stderr.split("failed (exitcode: 2)")[0] and "[rank1]" not in proc.stderr
    assert time.monotonic() - start < 120
    assert sorted(snapshot(cfg["output"])) == ["config.yaml"]  # no partial checkpoint (best.pth is the first)


def test_rank_outside_torchrun_is_0(monkeypatch):
    monkeypatch.setenv("RANK", "3")  # left over from another launcher
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert du.env_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert du.env_rank() == 3
