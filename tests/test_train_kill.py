"""Slow end-to-end checks: a SIGKILLed training process resumes to bitwise the same weights;
the README's digits demo reaches >= 95 % held-out top-1."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from train_helpers import make_image_folder, tiny_config
from vheat.train.checkpoint import list_checkpoints, read_checkpoint
from vheat.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM = ["aug.enabled=true", "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.re_prob=0.5", "aug.mixup=0.8",
          "aug.cutmix=1.0", "aug.label_smoothing=0.1", "model.drop_path_rate=0.2", "train.deterministic=true",
          "train.epochs=3", "train.warmup_epochs=1", "train.threads=1"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"), n_train=10, n_val=2)  # 30 images: 7 steps/epoch
    full = train(tiny_config(folder, str(tmp_path / "full"), *RANDOM))
    cfg = tiny_config(folder, str(tmp_path / "killed"), *RANDOM, "train.save_every_steps=1",
                      "train.keep_checkpoints=0")
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "vheat", "train", "-c", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # kill it somewhere inside the second epoch
            steps = [read_checkpoint(p)["global_step"] for p in list_checkpoints(cfg["output"])[-1:]]
            if steps and steps[0] >= 9:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(list_checkpoints(cfg["output"])[-1])
    assert killed_at["global_step"] < 21
    resumed = train(cfg)
    assert resumed["status"] == "finished"
    a, b = (read_checkpoint(list_checkpoints(d)[-1]) for d in (full["output"], cfg["output"]))
    assert a["global_step"] == b["global_step"] == 21
    for key in ("model", "model_ema"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), f"{key}.{k}"
    assert not [n for n in os.listdir(cfg["output"]) if n.endswith(".tmp")]  # stale temp files swept


@pytest.mark.slow
def test_digits_demo_reaches_95_percent(tmp_path, monkeypatch, capsys):
    from vheat.cli.main import main

    monkeypatch.setenv("VHEAT_DATA_DIR", str(tmp_path / "data"))
    start = time.time()
    with pytest.raises(SystemExit) as exc:
        main(["train", "-c", "demo_digits", "-o", str(tmp_path / "run"), "--set", "train.progress=false"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    records = [yaml.safe_load(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    final = records[-1]
    print(f"digits demo: {time.time() - start:.0f} s, top-1 {final['val_acc1']:.2f}%, "
          f"EMA {final['ema_val_acc1']:.2f}%")
    assert "final top-1" in out and final["val_acc1"] >= 95.0
    assert time.time() - start < 600
