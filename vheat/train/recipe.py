"""The optimisation recipe from a config, built from timm's pieces.

Official vHeat / Swin recipe: AdamW; lr, warm-up lr and min lr scaled linearly by the
global batch (per-process batch x processes x accumulation steps) / 512; per-iteration
cosine after a warm-up prefix; no weight decay on 1-D parameters, biases and the names
in ``model.no_weight_decay()`` (timm's ``filter_bias_and_bn``); Mixup / CutMix with
label smoothing folded into the soft targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from .config import ConfigError


@dataclass
class ScaledLR:
    base: float
    warmup: float
    minimum: float


def scaled_lrs(cfg: dict, world: int) -> ScaledLR:
    t = cfg["train"]
    ref = t["lr_reference_batch"]
    factor = 1.0
    if ref:
        factor = cfg["data"]["batch_size"] * world * t["accumulation_steps"] / float(ref)
    return ScaledLR(t["base_lr"] * factor, t["warmup_lr"] * factor, t["min_lr"] * factor)


# torch's own Adam / AdamW, which have a fused single-kernel step on CPU and CUDA.
FUSED_OPTIMIZERS = ("adamw", "adam")


def build_optimizer(cfg: dict, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    t = cfg["train"]
    extra = {}
    if t["opt"].lower() in ("adamw", "adam", "nadamw", "lamb", "adan"):
        extra = dict(eps=t["opt_eps"], betas=tuple(t["opt_betas"]))
    if t["opt"].lower() in FUSED_OPTIMIZERS and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters()
    ):
        # Same update rule in one kernel over all parameters instead of a Python loop over
        # them: the per-parameter loop is a large share of a small-batch CPU training step.
        extra["fused"] = True
    return create_optimizer_v2(model, opt=t["opt"], lr=lr, weight_decay=t["weight_decay"],
                               momentum=t["momentum"], filter_bias_and_bn=True, **extra)


def build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer, lrs: ScaledLR, steps_per_epoch: int):
    """Per-iteration scheduler; total length is exactly ``train.epochs`` epochs of optimizer steps."""
    t = cfg["train"]
    warmup = t["warmup_epochs"]
    # create_scheduler_v2 puts a warm-up prefix *before* num_epochs of cosine; the official
    # schedule fits warm-up + cosine into train.epochs.
    cosine_epochs = t["epochs"] - warmup if t["warmup_prefix"] else t["epochs"]
    sched, _ = create_scheduler_v2(
        optimizer, sched=t["sched"], num_epochs=cosine_epochs, warmup_epochs=warmup, warmup_lr=lrs.warmup,
        min_lr=lrs.minimum, warmup_prefix=t["warmup_prefix"], step_on_epochs=False,
        updates_per_epoch=steps_per_epoch)
    sched.step_update(0)
    return sched


def build_mixup(cfg: dict, num_classes: int) -> Optional[Mixup]:
    a = cfg["aug"]
    if not a["enabled"] or not (a["mixup"] > 0 or a["cutmix"] > 0 or a["cutmix_minmax"] is not None):
        return None
    return Mixup(mixup_alpha=a["mixup"], cutmix_alpha=a["cutmix"], cutmix_minmax=a["cutmix_minmax"],
                 prob=a["mixup_prob"], switch_prob=a["mixup_switch_prob"], mode=a["mixup_mode"],
                 label_smoothing=a["label_smoothing"], num_classes=num_classes)


def build_train_loss(cfg: dict, mixup: Optional[Mixup]) -> nn.Module:
    smoothing = cfg["aug"]["label_smoothing"]
    if mixup is not None:
        return SoftTargetCrossEntropy()  # smoothing is already in Mixup's soft targets
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


def amp_dtype(cfg: dict, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype: 'auto' is bf16 on CUDA and fp32 (no autocast) on CPU, where small
    models run faster in fp32; 'bf16' on CPU turns on CPU bf16 autocast."""
    mode = cfg["train"]["amp"]
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "none"
    if mode == "none":
        return None
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; on CPU use bf16 or none")
    return torch.bfloat16 if mode == "bf16" else torch.float16
