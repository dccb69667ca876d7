"""Shared helpers for the trainer / CLI / data tests (no tests here): tiny datasets and configs, the CLI
in a subprocess, folder snapshots."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vheat.train.config import load_config


def make_image_folder(root: str, classes=("ant", "bee", "cat"), n_train: int = 8, n_val: int = 4, size: int = 16,
                      seed: int = 0) -> str:
    """root/{train,val}/<class>/*.png with class-dependent mean colour, so a model can learn it."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3))
                base[..., c % 3] = 200
                pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return root


def tiny_config(root: str, output: str, *overrides: str) -> dict:
    """A 2-stage vHeat (dims 8, 16 px) on an ImageFolder tree; no augmentation randomness unless asked."""
    base = [
        "model.name=vheat_tiny", "model.kwargs={depths: [1, 1], dims: 8}", "model.drop_path_rate=0.0",
        f"data.root={root}", "data.img_size=16", "data.batch_size=4", "data.num_workers=0", "data.crop_pct=1.0",
        "aug.enabled=false", "aug.mixup=0", "aug.cutmix=0", "aug.label_smoothing=0",
        "train.epochs=2", "train.warmup_epochs=0", "train.base_lr=0.005", "train.lr_reference_batch=0",
        "train.ema_decay=0.9", "train.progress=false", "train.plot=false", "train.device=cpu", "train.amp=none",
        f"output={output}",
    ]
    return load_config(None, base + list(overrides))




ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                **extra)


def start_cli(*args, module="vheat", code=None, env=None, **popen) -> subprocess.Popen:
    """``python -m vheat ARGS`` (or ``python -c CODE ARGS``) with stdout and stderr piped (not a terminal,
    as in CI or ``> log``)."""
    command = ["-c", code] if code is not None else ["-m", module]
    return subprocess.Popen([sys.executable, *command, *map(str, args)], cwd=ROOT, env=env or cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish_cli(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """Exit code and the output as written: carriage returns kept (text mode would turn them into newlines)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def run_cli(*args, module="vheat", timeout: float = 300, **kwargs) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m vheat ARGS``."""
    return finish_cli(start_cli(*args, module=module, **kwargs), timeout)


def snapshot(folder) -> dict:
    """sha256 of every file under ``folder`` except the append-only log.txt; a link's target as written."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name != "log.txt":
                path = os.path.join(dirpath, name)
                found[os.path.relpath(path, folder)] = "-> " + os.readlink(path) if os.path.islink(path) else \
                    hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def run_main(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the ``vheat`` command line run in this process."""
    from vheat.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err
