"""Builds the model named in a config through timm's registry and loads weights into it."""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Iterator, Optional

import timm
import torch
from torch import nn

from .config import ConfigError
from .checkpoint import CheckpointError, describe_mismatch, load_state_strict, read_checkpoint, strip_prefixes

HCO_ENV = "VHEAT_HCO_BACKEND"


def register_models() -> None:
    """Imports vheat.models so vheat_tiny / small / base are in timm's registry (if present)."""
    try:
        importlib.import_module("vheat.models")
    except ModuleNotFoundError as exc:
        if exc.name not in ("vheat.models", "vheat"):
            raise


@contextlib.contextmanager
def hco_backend(name: str) -> Iterator[None]:
    """Sets $VHEAT_HCO_BACKEND for the block (the operator's dispatch reads it per call)."""
    old = os.environ.get(HCO_ENV)
    if name and name != "auto":
        os.environ[HCO_ENV] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(HCO_ENV, None)
        else:
            os.environ[HCO_ENV] = old


def build_model(cfg: dict, num_classes: int) -> nn.Module:
    register_models()
    m = cfg["model"]
    name = m["name"]
    if not timm.is_model(name):
        similar = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ConfigError(f"model.name {name!r} is not a registered timm model"
                         + (f"; similar: {', '.join(similar)}" if similar else ""))
    kwargs = dict(m["kwargs"])
    kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("drop_path_rate", m["drop_path_rate"])
    if m["drop_rate"]:
        kwargs.setdefault("drop_rate", m["drop_rate"])
    if name.startswith("vheat"):
        kwargs.setdefault("img_size", cfg["data"]["img_size"])  # fixes the freq_embed grids
        if m["hco_backend"] != "auto":
            kwargs.setdefault("hco_backend", m["hco_backend"])
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build model {name!r} with kwargs {sorted(kwargs)}: {exc}") from None


def classifier_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the classification head (timm's get_classifier())."""
    if not hasattr(model, "get_classifier"):
        return []
    head = model.get_classifier()
    for prefix, module in model.named_modules():
        if module is head:
            return [f"{prefix}.{k}" if prefix else k for k in head.state_dict()]
    return []


def pick_state_dict(ckpt, path: str, key: str = "auto") -> tuple[dict, str]:
    """The weights inside a checkpoint (ours, the official {"model", "model_ema"}, or a bare state_dict)."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} does not hold a state_dict or a checkpoint dict (got {type(ckpt).__name__})")
    if key == "auto":
        key = "model" if "model" in ckpt else ("state_dict" if "state_dict" in ckpt else "")
    if key:
        if key not in ckpt:
            raise CheckpointError(f"{path} has no {key!r} entry (it has: {', '.join(map(str, list(ckpt)[:10]))})")
        sd = ckpt[key]
        if isinstance(sd, dict) and "module" in sd and isinstance(sd["module"], dict):
            sd = sd["module"]  # some EMA wrappers nest the weights
    else:
        sd = ckpt
        key = "state_dict"
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}[{key!r}] is not a state_dict of tensors")
    return strip_prefixes(sd), key


def load_weights(model: nn.Module, path: str, key: str = "auto", drop_head_if_mismatch: bool = False,
                 arch: Optional[str] = None, allow_pickle: bool = False) -> str:
    """Loads weights from ``path`` into ``model`` strictly; returns the entry used.

    vHeat models go through vheat.checkpoint_io (official layouts: train / infer mode,
    freq_embed resized to the model's resolution). ``drop_head_if_mismatch``: fine-tuning
    on another label set keeps the freshly initialised classifier when its shape differs.
    """
    arch = arch or type(model).__name__
    sd, used = pick_state_dict(read_checkpoint(path, allow_pickle), path, key)
    source = f"{path}[{used!r}]"
    if hasattr(model, "set_infer_mode"):  # vheat.models.VHeat
        from vheat.checkpoint_io import CheckpointFormatError, load_official_checkpoint

        try:
            load_official_checkpoint(model, sd, keep_classifier_if_mismatch=drop_head_if_mismatch)
        except (CheckpointFormatError, RuntimeError) as exc:
            problem = describe_mismatch(model, sd) or str(exc)
            raise CheckpointError(f"checkpoint {source} does not fit model {arch!r} (another architecture or "
                                  f"size?): {problem}") from None
        return used
    if drop_head_if_mismatch:
        own = model.state_dict()
        head = classifier_keys(model)
        if any(k in sd and tuple(sd[k].shape) != tuple(own[k].shape) for k in head):
            sd = dict(sd, **{k: own[k] for k in head})
    load_state_strict(model, sd, source, arch)
    return used
