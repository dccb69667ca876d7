"""What every config value accepts: one table, checked by :func:`vheat.train.config.validate`
before any work starts.

A value outside its rule is a one-line :class:`ConfigError` naming the key, the value and what is
accepted, instead of a traceback from deep inside timm or torch, or a run that silently does
something else (a 1-entry ``data.mean`` broadcast over 3 channels, ``aug.hflip=5``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds an unusable value."""


class Rule(NamedTuple):
    accepts: str                           # completes "<key> must be ..."
    check: Callable[[Any], bool]
    normalize: Callable[[Any], Any] = lambda v: v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return _is_number(v) and int(v) == v


def integer(low: int, optional: bool = False) -> Rule:
    what = "a positive integer" if low == 1 else "a non-negative integer" if low == 0 else f"an integer >= {low}"
    return Rule(what + (" or null" if optional else ""),
                lambda v: (optional and v is None) or (_is_int(v) and v >= low),
                lambda v: v if v is None else int(v))


def number(low: float, high: Optional[float] = None, low_ok: bool = True, high_ok: bool = False,
           optional: bool = False) -> Rule:
    bound = f"{'>=' if low_ok else '>'} {low:g}"
    if high is not None:
        bound += f" and {'<=' if high_ok else '<'} {high:g}"

    def check(v: Any) -> bool:
        if optional and v is None:
            return True
        return _is_number(v) and (v >= low if low_ok else v > low) and \
            (high is None or (v <= high if high_ok else v < high))
    return Rule(f"a finite number {bound}" + (" (or null)" if optional else ""), check)


PROBABILITY = number(0.0, 1.0, high_ok=True)
FINITE = Rule("a finite number", _is_number)
FLAG = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a string", lambda v: isinstance(v, str))
NAME = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))


def choice(*options: str) -> Rule:
    # YAML 1.1 reads on / off / yes / no as booleans, on the command line and in files alike:
    # where "on" / "off" are options, a boolean means them.
    def normalize(v: Any) -> Any:
        if isinstance(v, bool):
            word = "on" if v else "off"
            return word if word in options else v
        return v
    return Rule(f"one of {', '.join(options)}", lambda v: normalize(v) in options, normalize)


def numbers(count: int, element: Rule, of: str = "") -> Rule:
    """A list of exactly ``count`` values (``of``: what each stands for), each accepted by ``element``."""
    return Rule(f"a list of {count} values{f' (one per {of})' if of else ''}, each {element.accepts}",
                lambda v: isinstance(v, (list, tuple)) and len(v) == count and all(element.check(x) for x in v),
                list)


def ascending_pair(element: Rule, optional: bool = False) -> Rule:
    return Rule(f"[min, max] with min <= max, each {element.accepts}" + (" (or null)" if optional else ""),
                lambda v: (optional and v is None) or (numbers(2, element).check(v) and v[0] <= v[1]),
                lambda v: v if v is None else list(v))


def _optimizers() -> list[str]:
    from timm.optim import list_optimizers

    return list_optimizers()


OPTIMIZER = Rule("an optimizer name of timm (adamw, sgd, lamb, ...; see timm.optim.list_optimizers())",
                 lambda v: isinstance(v, str) and v.lower() in _optimizers())
# timm's create_scheduler_v2 names; 'plateau' needs a metric per epoch and 'none' returns no
# scheduler, neither of which the per-step training loop drives.
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant")
COLOR_JITTER = Rule("a finite number >= 0, a list of 3 or 4 of them, or null",
                    lambda v: v is None or number(0.0).check(v) or (
                        isinstance(v, (list, tuple)) and len(v) in (3, 4) and all(number(0.0).check(x) for x in v)))

RULES: dict[tuple[str, str], Rule] = {
    ("model", "name"): Rule("a model name registered in timm (e.g. vheat_tiny)", NAME.check),
    ("model", "drop_path_rate"): number(0.0, 1.0),
    ("model", "drop_rate"): number(0.0, 1.0),
    ("model", "num_classes"): integer(1, optional=True),
    ("model", "hco_backend"): choice("auto", "reference", "fft", "cpu", "triton", "cuda"),
    ("model", "pretrained"): Rule("a checkpoint path or ''", lambda v: v is None or isinstance(v, str),
                                  lambda v: v or ""),
    ("model", "pretrained_key"): choice("auto", "model", "model_ema"),
    ("model", "trust_checkpoint"): FLAG,
    ("data", "dataset"): choice("imagefolder", "digits"),
    ("data", "root"): TEXT,
    ("data", "img_size"): integer(1),
    ("data", "batch_size"): integer(1),
    ("data", "eval_batch_size"): integer(1, optional=True),
    ("data", "num_workers"): integer(0),
    ("data", "pin_memory"): FLAG,
    ("data", "interpolation"): choice("bicubic", "bilinear", "nearest", "box", "hamming", "lanczos"),
    ("data", "crop_pct"): number(0.0, 1.0, low_ok=False, high_ok=True),
    ("data", "mean"): numbers(3, FINITE, of="RGB channel"),  # images are always decoded to RGB
    ("data", "std"): numbers(3, number(0.0, low_ok=False), of="RGB channel"),
    ("data", "digits_size"): integer(8),
    ("data", "verify_images"): choice("fail", "skip", "off"),
    ("aug", "enabled"): FLAG,
    ("aug", "scale"): ascending_pair(number(0.0, 1.0, low_ok=False, high_ok=True)),  # fractions of the area
    ("aug", "ratio"): ascending_pair(number(0.0, low_ok=False)),
    ("aug", "hflip"): PROBABILITY,
    ("aug", "color_jitter"): COLOR_JITTER,
    ("aug", "auto_augment"): Rule("a timm auto-augment string or ''", lambda v: v is None or isinstance(v, str)),
    ("aug", "re_prob"): PROBABILITY,
    ("aug", "re_mode"): choice("const", "rand", "pixel"),
    ("aug", "re_count"): integer(1),
    ("aug", "mixup"): number(0.0),
    ("aug", "cutmix"): number(0.0),
    ("aug", "cutmix_minmax"): ascending_pair(number(0.0, 1.0, low_ok=False, high_ok=True), optional=True),
    ("aug", "mixup_prob"): PROBABILITY,
    ("aug", "mixup_switch_prob"): PROBABILITY,
    ("aug", "mixup_mode"): choice("batch", "pair", "elem"),
    ("aug", "label_smoothing"): number(0.0, 1.0),
    ("train", "epochs"): integer(1),
    ("train", "warmup_epochs"): number(0.0),
    ("train", "base_lr"): number(0.0, low_ok=False),
    ("train", "warmup_lr"): number(0.0),
    ("train", "min_lr"): number(0.0),
    ("train", "lr_reference_batch"): integer(0),
    ("train", "weight_decay"): number(0.0),
    ("train", "opt"): OPTIMIZER,
    ("train", "opt_eps"): number(0.0, low_ok=False),
    ("train", "opt_betas"): numbers(2, number(0.0, 1.0)),
    ("train", "momentum"): number(0.0),
    ("train", "sched"): choice(*SCHEDULERS),
    ("train", "warmup_prefix"): FLAG,
    ("train", "clip_grad"): number(0.0, optional=True),
    ("train", "accumulation_steps"): integer(1),
    ("train", "ema"): FLAG,
    ("train", "ema_decay"): number(0.0, 1.0),  # >= 1 never moves the EMA off its start
    ("train", "amp"): choice("auto", "bf16", "fp16", "none"),
    ("train", "channels_last"): FLAG,
    ("train", "compile"): FLAG,
    ("train", "device"): choice("auto", "cpu", "cuda"),
    ("train", "threads"): integer(0),
    ("train", "seed"): integer(0),
    ("train", "deterministic"): FLAG,
    ("train", "eval_every"): integer(1),
    ("train", "save_every_steps"): integer(0),
    ("train", "keep_checkpoints"): integer(0),
    ("train", "stop_after_steps"): integer(0),
    ("train", "log_every"): integer(1),
    ("train", "auto_resume"): FLAG,
    ("train", "progress"): choice("auto", "on", "off"),
    ("train", "plot"): FLAG,
}


def _reject(key: str, value: Any, accepts: str) -> ConfigError:
    return ConfigError(f"{key} must be {accepts}, got {value!r}")


def _check_warmup(cfg: dict) -> None:
    t = cfg["train"]
    if t["warmup_epochs"] and t["warmup_epochs"] >= t["epochs"]:
        raise ConfigError(f"train.warmup_epochs ({t['warmup_epochs']}) must be >= 0 and < train.epochs "
                          f"({t['epochs']})")


def _check_vheat_shape(cfg: dict) -> None:
    """vHeat's constructor arguments that the input size depends on: each stage halves the patch grid,
    so the input must leave every stage at least one pixel."""
    m = cfg["model"]
    if not m["name"].startswith("vheat"):
        return
    kwargs = m["kwargs"]
    for key in ("depths", "dims"):
        v = kwargs.get(key)
        if v is not None and not (numbers(len(v), integer(1)).check(v) if isinstance(v, (list, tuple))
                                  else key == "dims" and integer(1).check(v)):
            raise _reject(f"model.kwargs.{key}", v, "a list of positive integers, one per stage"
                          + (" (or one positive integer)" if key == "dims" else ""))
    stages = len(kwargs["depths"]) if kwargs.get("depths") is not None else 4
    patch = kwargs.get("patch_size", 4)
    if not integer(1).check(patch):
        raise _reject("model.kwargs.patch_size", patch, "a positive integer")
    smallest = patch * 2 ** (stages - 1)
    if cfg["data"]["img_size"] < smallest:
        raise _reject("data.img_size", cfg["data"]["img_size"],
                      f"an integer >= {smallest} for {m['name']} ({stages} stages after a patch of {patch}: "
                      f"each stage halves the grid)")


CROSS_CHECKS = (_check_warmup, _check_vheat_shape)


def check_values(cfg: dict) -> None:
    """Checks (and normalizes in place) every value of a merged config; raises :class:`ConfigError`."""
    for (section, key), rule in RULES.items():
        value = cfg[section][key]
        if not rule.check(value):
            raise _reject(f"{section}.{key}", value, rule.accepts)
        cfg[section][key] = rule.normalize(value)
    if not NAME.check(cfg["output"]):
        raise _reject("output", cfg["output"], "a directory path")
    for check in CROSS_CHECKS:
        check(cfg)
