"""Up-front image checks: every file's header is decoded before training starts, so a corrupt
image fails the run at once (or is skipped, counted) instead of epochs later.

``data.verify_images``: ``fail`` (default) refuses the run naming the bad files; ``skip``
drops them with a counted warning; ``off`` checks nothing (a bad file then fails when read).
Results are cached per split folder under ``$VHEAT_CACHE_DIR`` (default ``~/.cache/vheat``)
keyed by each file's size and mtime, so a second run re-checks only what changed. A cache that
cannot be written is a one-line warning, never a stopped run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Optional, Sequence

from PIL import Image
from tqdm import tqdm

from vheat.io import OutputWriteError, atomic_write_json

from .folders import DatasetError

CACHE_VERSION = 1
log = logging.getLogger("vheat.data")


def cache_path(split_dir: str) -> str:
    base = os.environ.get("VHEAT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vheat")
    key = hashlib.sha256(os.path.realpath(split_dir).encode()).hexdigest()[:24]
    return os.path.join(base, "image-checks", f"{key}.json")


def check_image(path: str) -> Optional[str]:
    """None when PIL can open the file and verify its structure, else the reason."""
    try:
        with Image.open(path) as img:
            img.verify()
        return None
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, struct.error, ...)
        return f"{type(exc).__name__}: {exc}"


def _load_cache(path: str, split_dir: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("version") == CACHE_VERSION and data.get("folder") == os.path.realpath(split_dir):
            return data["files"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # missing or damaged cache: check everything again
    return {}


def find_bad_images(split_dir: str, files: Sequence[str], progress: bool = False) -> dict[str, str]:
    """{path: reason} of the files that do not decode; cached per ``split_dir``."""
    store = cache_path(split_dir)
    cached = _load_cache(store, split_dir)
    results, bad, checked = {}, {}, 0
    for path in tqdm(files, desc=f"checking images in {split_dir}", leave=False, disable=not progress):
        rel = os.path.relpath(path, split_dir)
        try:
            st = os.stat(path)
        except OSError as exc:  # a dangling link, a file removed since the folder was listed
            reason = f"dangling link to {os.readlink(path)}" if os.path.islink(path) else exc.strerror
            bad[path] = reason
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        entry = cached.get(rel)
        if entry is None or entry[:2] != stamp:
            entry = stamp + [check_image(path)]
            checked += 1
        results[rel] = entry
        if entry[2] is not None:
            bad[path] = entry[2]
    if checked or len(results) != len(cached):
        _save_cache(store, {"version": CACHE_VERSION, "folder": os.path.realpath(split_dir), "files": results})
    return bad


def _save_cache(store: str, data: dict) -> None:
    # The cache only saves time: a failed write (full disk, read-only home) must not stop the run.
    try:
        atomic_write_json(store, data)
    except OutputWriteError as exc:
        log.warning(f"cannot write the image-check cache {exc.path}: {exc.reason}; going on without it "
                    f"(the next run checks these images again)")


def verify_dataset(dataset, mode: str, progress: bool = False) -> int:
    """Checks a torchvision ImageFolder's files per ``mode`` (fail | skip | off); returns how many were skipped."""
    if mode == "off":
        return 0
    bad = find_bad_images(dataset.root, [p for p, _ in dataset.samples], progress)
    if not bad:
        return 0
    shown = "; ".join(f"{p} ({reason})" for p, reason in list(bad.items())[:3])
    if mode == "fail":
        raise DatasetError(f"{len(bad)} of {len(dataset.samples)} images in {dataset.root} cannot be read: {shown}"
                           f"{' ...' if len(bad) > 3 else ''}. Remove or replace them, or set "
                           f"data.verify_images=skip to train without them")
    dataset.samples = [(p, t) for p, t in dataset.samples if p not in bad]
    dataset.imgs = dataset.samples
    dataset.targets = [t for _, t in dataset.samples]
    log.warning(f"skipping {len(bad)} unreadable image(s) of {dataset.root} (data.verify_images=skip): {shown}")
    return len(bad)
