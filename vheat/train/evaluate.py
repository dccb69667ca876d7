"""Top-1 / top-5 accuracy and cross-entropy over a (possibly sharded) validation loader."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vheat.checkpoint_io import CheckpointFormatError, load_weights, read_checkpoint
from vheat.data import build_val_loader, resolve_root

from . import distributed as dist_utils
from .model_factory import build_model
from .progress import show_bars
from .recipe import amp_dtype
from .runtime import on_main, run_context


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


def labels_by_name(classes: list[str], trained_on: list[str], checkpoint: str, folder: str):
    """Maps the dataset's labels (indices into its sorted class folders) to the checkpoint's labels by
    class name: a val folder holding classes 5, 6, 7 only would otherwise be scored as 0, 1, 2."""
    unknown = [c for c in classes if c not in trained_on]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CheckpointFormatError(f"{folder} holds class folder(s) {shown} that {checkpoint} was not trained on (its "
                              f"{len(trained_on)} classes: {', '.join(trained_on[:5])}"
                              f"{', ...' if len(trained_on) > 5 else ''}); evaluate on the classes it knows")
    return {i: trained_on.index(c) for i, c in enumerate(classes)}.__getitem__


def evaluate_checkpoint(cfg: dict, checkpoint: Optional[str]) -> dict:
    """Evaluates a checkpoint (ours or official) on data.root/val: model and, if present, EMA.

    ``checkpoint`` None falls back to model.pretrained; with neither it is an error (random
    weights are not worth evaluating). The file is read once."""
    checkpoint = checkpoint or cfg["model"]["pretrained"] or None
    if checkpoint is None:
        raise CheckpointFormatError("eval needs weights: pass --checkpoint PATH (or set model.pretrained)")
    with run_context(cfg) as device:
        ckpt = read_checkpoint(checkpoint, cfg["model"]["trust_checkpoint"])
        root = on_main(lambda: resolve_root(cfg))
        classes, val, loader = build_val_loader(cfg, root, dist_utils.rank(), dist_utils.world_size())
        trained_on = ckpt.get("classes") if isinstance(ckpt, dict) else None  # ours store them; official ones do not
        if trained_on:
            val.target_transform = labels_by_name(classes, list(trained_on), checkpoint, f"{root}/val")
        num_classes = cfg["model"]["num_classes"] or len(trained_on or classes)
        amp = amp_dtype(cfg, device)
        results = {"classes": len(classes)}
        entries = ["model"] if isinstance(ckpt, dict) and "model" in ckpt else ["auto"]  # bare state_dict
        if isinstance(ckpt, dict) and ckpt.get("model_ema") is not None:
            entries.append("model_ema")
        for entry in entries:
            model = build_model(cfg, num_classes)
            load_weights(model, ckpt, entry, arch=cfg["model"]["name"], source=checkpoint)
            model.to(device)
            if cfg["train"]["channels_last"]:
                model.to(memory_format=torch.channels_last)
            name = "ema" if entry == "model_ema" else "model"
            results[name] = evaluate(model, loader, device, amp, cfg["train"]["channels_last"],
                                     show_bars(cfg), desc=f"eval {name}")
        return results
