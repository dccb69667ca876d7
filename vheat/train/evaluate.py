"""Top-1 / top-5 accuracy and cross-entropy over a (possibly sharded) validation loader."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed as dist_utils


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, amp: Optional[torch.dtype] = None,
             channels_last: bool = False, progress: bool = False, desc: str = "eval") -> dict:
    """Returns {"loss", "acc1", "acc5", "count"} summed over every process (exact, no padding)."""
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    autocast = (torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext())
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
               disable=not (progress and dist_utils.is_main()))
    for images, target in bar:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(target[:, None])
        correct1 += hit[:, :1].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        count += target.numel()
    model.train(was_training)
    loss_sum, correct1, correct5, count = dist_utils.all_reduce_sum([loss_sum, correct1, correct5, count], device)
    if count == 0:
        raise ValueError("evaluation saw no images: the validation set is empty")
    return {"loss": loss_sum / count, "acc1": 100.0 * correct1 / count, "acc5": 100.0 * correct5 / count,
            "count": int(count)}
