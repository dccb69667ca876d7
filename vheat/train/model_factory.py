"""Builds the model named in a config through timm's registry (weights: vheat.checkpoint_io.load_weights)."""
from __future__ import annotations

import importlib

import timm
from torch import nn

from .config import ConfigError


def register_models() -> None:
    """Imports vheat.models so vheat_tiny / small / base are in timm's registry (if present)."""
    try:
        importlib.import_module("vheat.models")
    except ModuleNotFoundError as exc:
        if exc.name not in ("vheat.models", "vheat"):
            raise


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
        if m["hco_backend"] != "auto":  # the backend is a model setting, nothing process-wide
            kwargs.setdefault("hco_backend", m["hco_backend"])
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError) as exc:  # an unknown or unusable constructor argument in model.kwargs
        raise ConfigError(f"cannot build model {name!r} with kwargs {sorted(kwargs)}: {exc}") from None
