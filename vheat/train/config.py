"""Run configuration: defaults, YAML files, command-line overrides, strict key checking.

A config is a plain nested dict. Every key must exist in ``DEFAULTS`` (a typo is an error,
never a silently ignored setting); ``model.kwargs`` is the one free-form section, passed
as keyword arguments to the model constructor. What each value accepts is in
:mod:`vheat.train.config_rules`.

Precedence, lowest first: ``DEFAULTS``, the YAML file, ``--set`` / ``--opts`` overrides, then the
dedicated flags (``--epochs``, ``--progress``, ...). Every layer merges into nested mappings, so
``--set model.kwargs.dims=32`` changes only ``dims``; ``model.kwargs=null`` empties the section.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Mapping

import yaml

from .config_rules import ConfigError, check_values

__all__ = ["ConfigError", "DEFAULTS", "load_config", "parse_override", "dump_config"]

FREE_FORM = {("model", "kwargs")}

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "vheat_tiny",          # timm registry name (vheat_* after `import vheat.models`)
        "kwargs": {},                  # extra constructor kwargs (depths, dims, post_norm, ...)
        "drop_path_rate": 0.1,
        "drop_rate": 0.0,
        "num_classes": None,           # None: number of classes found in the dataset
        "hco_backend": "auto",         # auto | reference | fft | cpu | triton | cuda
        "pretrained": "",              # checkpoint to start from (fine-tuning); official or ours
        "pretrained_key": "auto",      # auto | model | model_ema
        "trust_checkpoint": False,     # load pretrained / eval checkpoints with full pickle (trusted files)
    },
    "data": {
        "dataset": "imagefolder",      # imagefolder (root/train, root/val) | digits (built in)
        "root": "",                    # dataset root; for digits: '' = ~/.cache/vheat/digits-<size>
        "img_size": 224,
        "batch_size": 128,             # per process
        "eval_batch_size": None,       # None: 2 x batch_size
        "num_workers": 8,
        "pin_memory": True,
        "interpolation": "bicubic",
        "crop_pct": 0.875,             # eval: resize img_size / crop_pct, then center crop
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "digits_size": 32,             # side of the exported digits PNGs
        "verify_images": "fail",       # fail | skip | off: decode every image's header before training
    },
    "aug": {
        "enabled": True,               # False: eval transform for training too (no randomness)
        "scale": [0.08, 1.0],
        "ratio": [0.75, 1.3333333333333333],
        "hflip": 0.5,
        "color_jitter": 0.4,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "re_prob": 0.25,
        "re_mode": "pixel",
        "re_count": 1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "cutmix_minmax": None,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "mixup_mode": "batch",
        "label_smoothing": 0.1,
    },
    "train": {
        "epochs": 300,
        "warmup_epochs": 20,
        "base_lr": 5.0e-4,             # scaled by global batch / lr_reference_batch
        "warmup_lr": 5.0e-7,
        "min_lr": 5.0e-6,
        "lr_reference_batch": 512,     # 0: no linear scaling
        "weight_decay": 0.08,          # not applied to 1-D params, biases, model.no_weight_decay()
        "opt": "adamw",
        "opt_eps": 1.0e-8,
        "opt_betas": [0.9, 0.999],
        "momentum": 0.9,
        "sched": "cosine",
        "warmup_prefix": True,         # warm-up precedes the cosine (official Swin/vHeat schedule)
        "clip_grad": 5.0,              # max grad norm; 0 / None disables
        "accumulation_steps": 1,
        "ema": True,
        "ema_decay": 0.9999,
        "amp": "auto",                 # auto (bf16 on CPU and CUDA) | bf16 | fp16 | none
        "channels_last": False,
        "compile": False,
        "device": "auto",              # auto | cpu | cuda
        "threads": 0,                  # CPU threads per process (torch.set_num_threads); 0: torch's default
        "seed": 0,
        "deterministic": False,        # deterministic algorithms: bitwise reproducible resume
        "eval_every": 1,               # epochs
        "save_every_steps": 0,         # extra mid-epoch checkpoints every N optimizer steps
        "keep_checkpoints": 2,         # newest N periodic checkpoints kept (best kept apart)
        "stop_after_steps": 0,         # test hook: checkpoint and exit after N optimizer steps
        "log_every": 20,               # optimizer steps between progress lines
        "auto_resume": True,
        "progress": "auto",            # bars: auto (only when stderr is a terminal) | on | off; else log lines
        "plot": True,                  # metrics.png at the end of training
    },
    "output": "runs/default",
}


def _merge(base: dict, update: Mapping, where: str, path: tuple = ()) -> None:
    for key, value in update.items():
        full = path + (key,)
        dotted = ".".join(full)
        if key not in base:
            known = ", ".join(sorted(base)) if base else "(none)"
            section = ".".join(path) or "top level"
            raise ConfigError(f"unknown config key {dotted!r} in {where}; known keys at {section}: {known}")
        if full in FREE_FORM:
            # merged like every other section (model.kwargs.dims=32 changes only dims); null empties it
            if value is None:
                base[key] = {}
            elif not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} in {where} must be a mapping, got {type(value).__name__}")
            else:
                base[key] = {**base[key], **value}
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} in {where} is a section; give a mapping, got {value!r}")
            _merge(base[key], value, where, full)
        else:
            base[key] = value


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'train.base_lr=1e-3'`` -> (['train', 'base_lr'], 0.001); values are parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.base_lr=1e-3)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {exc}") from None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads '1e-3' as a string
    return key.strip().split("."), value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def load_config(path: str | None = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides; then validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a YAML config: it holds binary data (a checkpoint "
                              f"goes to --checkpoint, --resume or model.pretrained)") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        _merge(cfg, _fix_numbers(data), f"config file {path}")
    for item in overrides:
        keys, value = parse_override(item)
        _merge(cfg, _nest(keys, value), f"override {item!r}")
    validate(cfg)
    return cfg


def _fix_numbers(node: Any) -> Any:
    # YAML 1.1 (PyYAML) reads 5e-4 (no dot) as a string; a config means the number.
    if isinstance(node, Mapping):
        return {k: _fix_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_numbers(v) for v in node]
    if isinstance(node, str) and _looks_numeric(node) and node.strip().lower() not in ("nan", "inf", "-inf"):
        return float(node)
    return node


def validate(cfg: dict) -> None:
    """Every value against its rule in :mod:`config_rules` (normalized in place)."""
    check_values(cfg)


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
