"""Reading and writing official vHeat checkpoints.

Released checkpoints are ``{"model": state_dict, "model_ema": state_dict, ...}`` (keys possibly
prefixed ``module.`` by DistributedDataParallel) in the train-mode layout (freq_embed, to_k);
``infer_init`` models save the infer-mode layout (k_exp). ``load_official_checkpoint`` takes
either into a :class:`vheat.models.VHeat` with ``strict=True``, switching the model's mode
when the layouts differ, resizing freq_embed when the model was built for another
img_size, and optionally keeping a freshly initialised classifier of another size.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .models.freq_embed import resize_freq_embed
from .train.atomic import atomic_torch_save

PathOrDict = Union[str, os.PathLike, Mapping[str, Any]]
CLASSIFIER_KEYS = ("classifier.3.weight", "classifier.3.bias")


class CheckpointFormatError(ValueError):
    """The file or dict is not a vHeat checkpoint this module can read."""


def read_checkpoint(path: Union[str, os.PathLike], allow_pickle: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; ``allow_pickle`` for trusted files holding other objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise CheckpointFormatError(
                f"{path}: holds objects beyond tensors (e.g. a training config), which weights_only loading "
                f"refuses ({str(exc).splitlines()[0]}). If you trust the file, pass allow_pickle=True."
            ) from None
    return torch.load(path, map_location="cpu", weights_only=False)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> Dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key that has it (DistributedDataParallel / EMA wrappers)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def extract_state_dict(checkpoint: Mapping[str, Any], key: str = "model") -> Dict[str, torch.Tensor]:
    """The state_dict under ``key`` ('model' or 'model_ema'), or ``checkpoint`` itself if it is one."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return strip_prefix(checkpoint)
    if key not in checkpoint:
        raise CheckpointFormatError(
            f"checkpoint has no {key!r} entry; it has {sorted(map(str, checkpoint))[:10]} "
            "(official checkpoints hold 'model' and 'model_ema')"
        )
    sd = checkpoint[key]
    if isinstance(sd, Mapping) and "module" in sd and isinstance(sd["module"], Mapping):
        sd = sd["module"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointFormatError(f"checkpoint[{key!r}] is not a state_dict of tensors")
    return strip_prefix(sd)


def is_infer_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for the infer-mode layout (folded k_exp), False for train mode (freq_embed, to_k)."""
    return any(k.endswith(".op.k_exp") for k in state_dict)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official keys -> ``model``'s: strips ``module.``, resizes freq_embed (bicubic) to the model's grids.

    Does not change the layout (train vs infer); :func:`load_official_checkpoint` switches the model.
    """
    sd = strip_prefix(state_dict)
    own = model.state_dict()
    for i, _ in enumerate(getattr(model, "res", [])):
        key = f"freq_embed.{i}"
        if key in sd and key in own and sd[key].shape != own[key].shape:
            if sd[key].shape[2] != own[key].shape[2]:
                raise CheckpointFormatError(
                    f"{key}: checkpoint has {sd[key].shape[2]} channels, the model {own[key].shape[2]} (another variant?)"
                )
            sd[key] = resize_freq_embed(sd[key], own[key].shape[:2]).contiguous()
    return sd


def load_official_checkpoint(
    model: nn.Module,
    checkpoint: PathOrDict,
    key: str = "model",
    strict: bool = True,
    keep_classifier_if_mismatch: bool = False,
    allow_pickle: bool = False,
):
    """Load an official vHeat checkpoint (path, checkpoint dict or state_dict) into a VHeat model.

    A train-layout checkpoint into an infer-mode model unfolds it, loads, and folds again
    (k_exp recomputed from the loaded weights); an infer-layout checkpoint folds a train-mode
    model first (it then stays in infer mode: k_exp cannot give back freq_embed / to_k).
    ``keep_classifier_if_mismatch`` keeps the model's own head when the class counts differ
    (fine-tuning). Returns ``load_state_dict``'s result.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
    sd = convert_official_state_dict(extract_state_dict(checkpoint, key), model)
    if keep_classifier_if_mismatch:
        own = model.state_dict()
        for k in CLASSIFIER_KEYS:
            if k in sd and k in own and sd[k].shape != own[k].shape:
                sd.update({kk: own[kk] for kk in CLASSIFIER_KEYS if kk in own})
                break
    refold = False
    if is_infer_layout(sd) and not model.infer_mode:
        model.set_infer_mode(True, keep_train_params=False)
    elif not is_infer_layout(sd) and model.infer_mode:
        model.set_infer_mode(False)
        refold = True
    result = model.load_state_dict(sd, strict=strict)
    if refold:
        model.set_infer_mode(True)
    return result


def save_official_checkpoint(
    path: Union[str, os.PathLike], model: nn.Module, model_ema: Optional[nn.Module] = None, **extra: Any
) -> None:
    """Write ``{"model": ..., ["model_ema": ...], **extra}`` atomically (temp file, fsync, os.replace)."""
    payload = {"model": model.state_dict(), **extra}
    if model_ema is not None:
        payload["model_ema"] = model_ema.state_dict()
    atomic_torch_save(payload, os.fspath(path))
