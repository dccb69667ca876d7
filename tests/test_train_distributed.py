"""Two processes (torchrun, gloo on CPU) train to the same weights as one process with the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from test_train_support import make_image_folder, tiny_config
from vheat.train import distributed as du
from vheat.train.checkpoint import list_checkpoints, read_checkpoint
from vheat.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torchrun(nproc, config_path, *args, command="train", timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "vheat", command, "-c", config_path, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


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


def test_rank_outside_torchrun_is_0(monkeypatch):
    monkeypatch.setenv("RANK", "3")  # left over from another launcher
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert du.env_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert du.env_rank() == 3
