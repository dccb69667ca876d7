"""scikit-learn's bundled 8x8 digits, exported once as an ImageFolder tree (no download).

    <root>/train/<0..9>/*.png, <root>/val/<0..9>/*.png, <root>/MANIFEST.json

A stratified, seeded 80/20 split; images upsampled (bicubic) to ``size`` x ``size`` RGB. The
tree is built in a temporary folder and renamed into place, so a killed export leaves
nothing half-written; an existing tree with a matching manifest is reused.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from .folders import DatasetError

FORMAT_VERSION = 1
VAL_FRACTION = 0.2
SPLIT_SEED = 0


def default_root(size: int) -> str:
    base = os.environ.get("VHEAT_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vheat")
    return os.path.join(base, f"digits-{size}")


def _manifest(size: int, n_train: int, n_val: int) -> dict:
    return {"format": FORMAT_VERSION, "source": "sklearn.datasets.load_digits", "size": size,
            "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED, "train": n_train, "val": n_val,
            "classes": [str(c) for c in range(10)]}


def _complete(root: str, size: int) -> bool:
    path = os.path.join(root, "MANIFEST.json")
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    if {k: m.get(k) for k in ("format", "size", "val_fraction", "split_seed")} != {
            "format": FORMAT_VERSION, "size": size, "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED}:
        return False
    for split in ("train", "val"):
        n = sum(len(files) for _, _, files in os.walk(os.path.join(root, split)))
        if n != m.get(split):
            return False
    return True


def export_digits(root: str | None = None, size: int = 32) -> str:
    """Writes (or reuses) the digits ImageFolder tree; returns its root."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not isinstance(size, int) or size < 8:
        raise DatasetError(f"digits image size must be an integer >= 8 (the source is 8x8), got {size!r}")
    root = root or default_root(size)
    if _complete(root, size):
        return root
    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    idx = np.arange(len(images))
    train_idx, val_idx = train_test_split(idx, test_size=VAL_FRACTION, random_state=SPLIT_SEED,
                                          stratify=digits.target)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(root) + ".", dir=parent)
    try:
        for split, ids in (("train", train_idx), ("val", val_idx)):
            for i in sorted(ids):
                label = int(digits.target[i])
                folder = os.path.join(tmp, split, str(label))
                os.makedirs(folder, exist_ok=True)
                gray = Image.fromarray(np.uint8(np.round(images[i] * (255.0 / 16.0))), mode="L")
                gray.resize((size, size), Image.BICUBIC).convert("RGB").save(
                    os.path.join(folder, f"{i:04d}.png"))
        with open(os.path.join(tmp, "MANIFEST.json"), "w") as f:
            json.dump(_manifest(size, len(train_idx), len(val_idx)), f, indent=1)
        if os.path.exists(root):  # stale or incomplete: replace it as a whole
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _complete(root, size):  # another process finished first only if complete
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
