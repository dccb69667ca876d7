"""Training checkpoints: atomic save, newest-complete lookup, RNG capture and restore.

A checkpoint is one ``torch.save`` dict written with temp file + fsync + os.replace:

    model, model_ema         state_dicts (no ``module.`` / ``_orig_mod.`` prefixes), the
                             keys the official vHeat checkpoints use, so both load the same way
    optimizer, scheduler, scaler
    epoch, step_in_epoch     where training resumes (step_in_epoch > 0: a mid-epoch save)
    global_step, best_acc1, config, world_size, arch
    rng                      every rank's torch / cuda / numpy / python RNG states
"""
from __future__ import annotations

import glob
import os
import pickle
import random
import re
from typing import Optional

import numpy as np
import torch

from .atomic import atomic_torch_save

FORMAT = "vheat-train-1"
_NAME = re.compile(r"checkpoint-ep(\d+)-step(\d+)\.pth$")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model / run it is loaded into."""


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
    atomic_torch_save(state, path)
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
    """Deletes temp files a killed writer left behind (``.<name>.<random>.tmp``, see atomic.py)."""
    stale = glob.glob(os.path.join(glob.escape(output_dir), ".checkpoint-ep*.tmp"))
    for path in stale:
        os.unlink(path)
    return stale


def read_checkpoint(path: str, allow_pickle: bool = False) -> dict:
    """``torch.load`` on CPU, ``weights_only`` unless ``allow_pickle`` (for trusted files only).

    Our checkpoints hold only tensors and plain containers, so they always load weights-only;
    a released checkpoint may also carry e.g. a pickled training config.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc))
        if not refused:  # not a refusal of some class: the file is damaged or not a torch file
            raise CheckpointError(f"cannot read checkpoint {path}: not a torch checkpoint "
                                  f"(truncated, corrupt or another format)") from None
        if not allow_pickle:
            raise CheckpointError(
                f"checkpoint {path} holds objects beyond tensors ({refused.group(1)}), which weights-only loading "
                f"refuses. "
                f"If you trust the file, set model.trust_checkpoint=true to load it with full pickle.") from None
    except Exception as exc:  # truncated / not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def newest_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The newest periodic checkpoint that loads and carries a full training state."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError:
            continue
        if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and "optimizer" in ckpt:
            return path
    return None


def strip_prefixes(state_dict: dict) -> dict:
    """Drops the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def describe_mismatch(model: torch.nn.Module, state_dict: dict, limit: int = 5) -> Optional[str]:
    """None when ``state_dict`` fits ``model`` exactly, else what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_state_strict(model: torch.nn.Module, state_dict: dict, source: str, arch: str) -> None:
    problem = describe_mismatch(model, state_dict)
    if problem:
        raise CheckpointError(f"checkpoint {source} does not fit model {arch!r} (another architecture or "
                              f"size?): {problem}")
    model.load_state_dict(state_dict, strict=True)
