"""vHeat as a dense-prediction backbone (official detection/segmentation wrapper semantics).

The official ``MMDET_VHEAT`` / ``MMSEG_VHEAT`` take each stage's features *before* its
downsample, normalise every requested one with its own LayerNorm (``outnorm{i}``), drop the
classifier, and resize each stage's freq_embed bicubically to the feature map's (H, W) at
run time. ``VHeatBackbone`` keeps those parameter names (so official downstream
checkpoints load) and reuses :class:`vheat.models.VHeat` for everything else: the
resize, infer mode (at the training resolution), per-block gradient checkpointing, HCO backends.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_io import (
    CLASSIFIER_KEYS,
    CheckpointFormatError,
    extract_state_dict,
    is_infer_layout,
    read_checkpoint,
    strip_prefix,
)
from ..models.vheat import VHeat
from .freq_embed import fit_freq_embed


class VHeatBackbone(VHeat):
    """(B, 3, H, W) -> list of LayerNorm'ed stage features (B, C_i, H_i, W_i) for ``out_indices``.

    Stage ``i`` has stride ``4 * 2**i``; H_i = ceil(H / 4 / 2**i) for any H, W (no padding
    needed). Arguments are :class:`VHeat`'s (``img_size`` fixes the stored freq_embed grids:
    img_size / 4 / 2**i) plus:

    Args:
        out_indices: stages whose features are returned, in increasing order.
        pretrained: path of a classification checkpoint (official ``{"model": ...}`` or a
            bare state_dict) loaded at construction, see :meth:`load_classification_checkpoint`.
        pretrained_key: which entry to load, 'model' or 'model_ema'.
        freq_embed_fit: how a checkpoint's freq_embed of another grid size is fitted to
            ``img_size``: 'interpolate' (bicubic) or 'pad' (zero-pad, as the official
            interpolate4downstream.py).
        pretrained_strict: raise when backbone keys other than ``outnorm*`` are missing from
            the checkpoint; False warns and keeps their fresh init (the official wrapper's
            strict=False, which e.g. its tiny configs rely on: post-norm + layer scale on a
            checkpoint without ``gamma1/2``).
    """

    def __init__(
        self,
        *,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        pretrained: Optional[str] = None,
        pretrained_key: str = "model",
        freq_embed_fit: str = "interpolate",
        pretrained_strict: bool = True,
        **vheat_kwargs: Any,
    ):
        vheat_kwargs.pop("num_classes", None)  # the classifier is built by VHeat, then removed below
        super().__init__(num_classes=1, **vheat_kwargs)
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not all(
            0 <= i < self.num_layers for i in out_indices
        ):
            raise ValueError(
                f"VHeatBackbone: out_indices must be distinct increasing stage indices in [0, {self.num_layers - 1}], "
                f"got {out_indices}"
            )
        self.out_indices = out_indices
        for i in out_indices:
            self.add_module(f"outnorm{i}", nn.LayerNorm(self.dims[i]))
        del self.classifier, self.head_drop
        self.out_channels = [self.dims[i] for i in out_indices]
        self.out_strides = [4 * 2**i for i in out_indices]
        if pretrained is not None:
            self.load_classification_checkpoint(
                pretrained, key=pretrained_key, freq_embed_fit=freq_embed_fit, strict=pretrained_strict
            )

    # The classifier API of VHeat does not apply to a backbone.
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise RuntimeError("VHeatBackbone has no classifier; use forward() for the stage features")

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        raise RuntimeError("VHeatBackbone has no classifier")

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"VHeatBackbone: expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        outs = []
        x = self.patch_embed(x)
        for i in range(self.out_indices[-1] + 1):  # later stages feed no output: skip them
            feat, x = self.layers[i](x, self._stage_freq(i, x))
            if i in self.out_indices:
                norm = getattr(self, f"outnorm{i}")
                y = F.layer_norm(feat.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                outs.append(y.permute(0, 3, 1, 2))  # NCHW view of channels-last memory
        return outs

    # --- pretrained weights ------------------------------------------------------------------
    def load_classification_checkpoint(
        self,
        checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
        key: str = "model",
        freq_embed_fit: str = "interpolate",
        strict: bool = True,
        allow_pickle: bool = False,
    ) -> List[str]:
        """Load a vHeat classification checkpoint (train layout) into this backbone.

        The classifier weights are dropped, ``outnorm{i}`` keep their fresh init (the official
        wrapper loads with strict=False for exactly these keys), and freq_embed grids of
        another size are fitted to ``img_size``. Every other key must match: an unexpected key
        raises, and so does a missing one unless ``strict=False`` (then it is warned about and
        returned), unlike the official silent strict=False.
        """
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
        sd = extract_state_dict(checkpoint, key)
        if is_infer_layout(sd):
            raise CheckpointFormatError(
                "VHeatBackbone: this checkpoint is in the infer-mode layout (folded k_exp at the training "
                "resolution); a dense-prediction backbone needs the train layout (freq_embed, to_k) to derive "
                "the attenuation at other input sizes"
            )
        sd = strip_prefix(sd, "backbone.")  # also accept weights saved from a detector / segmentor
        sd = {k: v for k, v in sd.items() if k not in CLASSIFIER_KEYS and not k.startswith("classifier.")}
        own = self.state_dict()
        for i in range(self.num_layers):
            k = f"freq_embed.{i}"
            if k in sd and k in own:
                sd[k] = fit_freq_embed(sd[k], tuple(own[k].shape[:2]), mode=freq_embed_fit, name=k)
        bad_shapes = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if k in own and v.shape != own[k].shape]
        if bad_shapes:
            raise CheckpointFormatError(f"VHeatBackbone: shape mismatch (another variant?): {bad_shapes[:5]}")
        result = self.load_state_dict(sd, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("outnorm")]
        if (missing and strict) or result.unexpected_keys:
            raise CheckpointFormatError(
                f"VHeatBackbone: checkpoint does not match the model: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
                + (" (pretrained_strict=False keeps missing keys at their init)" if missing else "")
            )
        if missing:
            warnings.warn(f"VHeatBackbone: {len(missing)} keys not in the checkpoint keep their init: {missing[:5]}")
        return missing
