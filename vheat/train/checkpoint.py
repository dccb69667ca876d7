"""A training run's files and lineage: periodic checkpoints, best.pth, metrics, resume points.

Reading and writing a file is vheat.checkpoint_io's job; this module decides which files
belong to which run and never lets a run discard another's (or its own earlier) work.
A periodic checkpoint is one dict written by :func:`vheat.checkpoint_io.write_checkpoint`:

    model, model_ema         state_dicts (no ``module.`` / ``_orig_mod.`` prefixes), the
                             keys the official vHeat checkpoints use, so both load the same way
    optimizer, scheduler, scaler
    epoch, step_in_epoch     where training resumes (step_in_epoch > 0: a mid-epoch save)
    global_step, best_acc1, config, world_size, arch
    run_id                   the run lineage: set when a run starts from scratch, kept on resume
    rng                      every rank's torch / cuda / numpy / python RNG states

``best.pth`` and every ``metrics.jsonl`` line carry the same ``run_id``.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import random
import re
import time
from typing import Optional

import numpy as np
import torch

from vheat.checkpoint_io import CheckpointFormatError, read_checkpoint, write_checkpoint

from ..io import atomic_write_text, read_jsonl
from .config import ConfigError
from .metrics import METRICS_FILE, PLOT_FILE

__all__ = ["CheckpointFormatError", "read_checkpoint", "save_checkpoint", "list_checkpoints", "find_resume_point",
           "set_aside_unreadable"]

FORMAT = "vheat-train-1"
BEST_FILE = "best.pth"
_NAME = re.compile(r"checkpoint-ep(\d+)-step(\d+)\.pth$")
log = logging.getLogger("vheat.train")


def checkpoint_name(epoch: int, global_step: int) -> str:
    return f"checkpoint-ep{epoch:04d}-step{global_step:08d}.pth"


def rng_state() -> dict:
    # numpy's state is stored as tensors / ints so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str, state: dict, keep: int) -> str:
    """Writes ``state`` atomically as the next periodic checkpoint; prunes all but ``keep`` newest."""
    state = dict(state, format=FORMAT)
    path = os.path.join(output_dir, checkpoint_name(state["epoch"], state["global_step"]))
    write_checkpoint(path, state)
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            if os.path.abspath(old) != os.path.abspath(path):
                os.unlink(old)
    return path


def list_checkpoints(output_dir: str) -> list[str]:
    """Periodic checkpoints in ``output_dir``, oldest first (by global step, then epoch)."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(output_dir), "checkpoint-ep*-step*.pth")):
        m = _NAME.search(os.path.basename(path))
        if m:
            found.append(((int(m.group(2)), int(m.group(1))), path))
    return [p for _, p in sorted(found)]


def remove_stale_temp_files(output_dir: str) -> list[str]:
    """Deletes temp files a killed writer left behind (``.<name>.<random>.tmp``, see vheat/io.py)."""
    stale = [p for pattern in (".checkpoint-ep*.tmp", f".{BEST_FILE}.*.tmp")
             for p in glob.glob(os.path.join(glob.escape(output_dir), pattern))]
    for path in stale:
        os.unlink(path)
    return stale


def check_output_folder(output_dir: str) -> None:
    """The output must be a folder this process can create or write to: a one-line error otherwise."""
    path = os.path.abspath(output_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"output {output_dir} is an existing file, not a folder; give a folder path (-o/--output)")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"output {output_dir} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output {output_dir}: no permission to write in {parent}")


def is_training_state(ckpt) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and "optimizer" in ckpt and "model" in ckpt


def _choices(output_dir: str) -> str:
    return (f"Nothing was changed. Choose one: resume from a readable checkpoint with --resume PATH, write to a "
            f"new folder with --output NEW_FOLDER, or pass --start-over to move this folder's run files into "
            f"{os.path.join(output_dir, 'previous-<time>')}/ and train from scratch.")


def find_resume_point(output_dir: str) -> Optional[tuple[str, dict, list[tuple[str, str]]]]:
    """The newest readable training checkpoint in ``output_dir``, its contents, and the newer ones
    that could not be used with the reason (see :func:`set_aside_unreadable`); None if the folder
    has no checkpoint. A folder whose checkpoints are all unreadable is refused."""
    paths = list_checkpoints(output_dir)
    skipped = []
    for path in reversed(paths):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointFormatError as exc:
            skipped.append((path, str(exc)))
            continue
        if not is_training_state(ckpt):
            skipped.append((path, "not a training checkpoint (no optimizer state or format tag)"))
            continue
        return path, ckpt, skipped
    if paths:
        listing = "\n".join(f"  {os.path.basename(p)}: {reason}" for p, reason in reversed(skipped))
        raise CheckpointFormatError(f"output folder {output_dir} holds {len(paths)} checkpoint(s), none of which can be "
                              f"resumed from:\n{listing}\n{_choices(output_dir)}")
    return None


def set_aside_unreadable(skipped: list[tuple[str, str]], resumed: str) -> None:
    """Renames checkpoints a fallback passed over to ``*.unreadable`` (kept for inspection, out of the
    run's way: pruning and later resumes ignore them) and logs why."""
    for bad, reason in skipped:
        os.replace(bad, bad + ".unreadable")
        log.warning(f"falling back past {os.path.basename(bad)} (renamed to *.unreadable): {reason}")
    if skipped:
        log.warning(f"resuming from the older {os.path.basename(resumed)}: {len(skipped)} newer checkpoint(s) "
                    f"could not be used")


def _run_files(output_dir: str) -> list[str]:
    names = [BEST_FILE, METRICS_FILE, PLOT_FILE, "config.yaml"]
    return list_checkpoints(output_dir) + [p for p in (os.path.join(output_dir, n) for n in names)
                                           if os.path.exists(p)]


def set_aside_run(output_dir: str) -> Optional[str]:
    """--start-over: moves the folder's run files into ``previous-<time>/``; returns that folder."""
    files = _run_files(output_dir)
    if not files:
        return None
    dest = os.path.join(output_dir, time.strftime("previous-%Y%m%d-%H%M%S"))
    while os.path.exists(dest):
        dest += "x"
    os.makedirs(dest)
    for path in files:
        os.replace(path, os.path.join(dest, os.path.basename(path)))
    return dest


def check_explicit_resume(output_dir: str, resume: str) -> None:
    """--resume PATH into a folder that holds other checkpoints would prune or mix them: refused."""
    found = [os.path.abspath(p) for p in list_checkpoints(output_dir)]
    target = os.path.abspath(resume)
    # from one of the folder's own checkpoints: only the ones after it are in the way
    others = found[found.index(target) + 1:] if target in found else found
    if others:
        names = ", ".join(os.path.basename(p) for p in others[:5]) + (" ..." if len(others) > 5 else "")
        raise CheckpointFormatError(f"--resume {resume}: output folder {output_dir} already holds other or newer "
                              f"checkpoints ({names}) that this run would prune or mix with. {_choices(output_dir)}")


def best_of_lineage(output_dir: str, run_id: Optional[str]) -> float:
    """Top-1 of the folder's best.pth (-1 if none); refused when it belongs to another run or is unreadable."""
    path = os.path.join(output_dir, BEST_FILE)
    if not os.path.exists(path):
        return -1.0
    try:
        best = read_checkpoint(path)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{exc}\nThis run would replace {path}. {_choices(output_dir)}") from None
    owner = best.get("run_id") if isinstance(best, dict) else None
    if owner != run_id:
        raise CheckpointFormatError(f"{path} belongs to another run (run id {owner}, this run {run_id}); this run would "
                              f"replace it. {_choices(output_dir)}")
    return float(best.get("acc1", -1.0))


def claim_metrics(output_dir: str, run_id: Optional[str], resume_epoch: int) -> int:
    """Keeps this lineage's metrics lines of epochs before ``resume_epoch`` (the resumed run redoes the
    rest); another run's lines are refused. Returns how many lines were dropped."""
    path = os.path.join(output_dir, METRICS_FILE)
    records = read_jsonl(path)
    foreign = [r for r in records if r.get("run_id") != run_id]
    if foreign:
        raise CheckpointFormatError(f"{path} holds {len(foreign)} line(s) of another run (run id "
                              f"{foreign[0].get('run_id')}, this run {run_id}); this run would mix its metrics "
                              f"into them. {_choices(output_dir)}")
    keep = [r for r in records if r.get("epoch", -1) < resume_epoch]
    if len(keep) < len(records):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    return len(records) - len(keep)
