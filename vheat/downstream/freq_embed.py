"""Fitting a checkpoint's freq_embed grids (h, w, C) to another training resolution.

Two ways: 'pad' zero-pads at the bottom and right, as the official interpolate4downstream.py
(the embedding of the original grid stays untouched, the new rows/columns start at zero);
'interpolate' resizes bicubically, as the official detection wrapper does at run time.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.freq_embed import resize_freq_embed

FIT_MODES = ("pad", "interpolate")


def fit_freq_embed(freq: torch.Tensor, size: Sequence[int], mode: str = "interpolate", name: str = "freq_embed") -> torch.Tensor:
    """(h, w, C) -> (H, W, C) by zero-padding or bicubic resizing; identity when the size already matches."""
    if mode not in FIT_MODES:
        raise ValueError(f"{name}: freq_embed fit mode must be one of {FIT_MODES}, got {mode!r}")
    if freq.dim() != 3:
        raise ValueError(f"{name}: expected a (h, w, C) freq_embed, got shape {tuple(freq.shape)}")
    size: Tuple[int, int] = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"{name}: target grid must be at least 1x1, got {size}")
    h, w = freq.shape[:2]
    if (h, w) == size:
        return freq
    if mode == "interpolate":
        return resize_freq_embed(freq, size).contiguous()
    if size[0] < h or size[1] < w:
        raise ValueError(
            f"{name}: zero-padding cannot shrink the {h}x{w} grid to {size[0]}x{size[1]}; "
            "use mode='interpolate' for a smaller target"
        )
    # F.pad pads the last dims: put C first, pad (W right, H bottom), then back to (H, W, C).
    out = F.pad(freq.permute(2, 0, 1), (0, size[1] - w, 0, size[0] - h), mode="constant", value=0.0)
    return out.permute(1, 2, 0).contiguous()
