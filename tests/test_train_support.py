"""Shared helpers for the trainer / CLI / data tests (no tests here): tiny datasets and configs."""
from __future__ import annotations

import os

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


