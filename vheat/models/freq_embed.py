"""Frequency embeddings at run-time resolutions.

The official classifier only runs at its training resolution; its detection wrapper resizes
each stage's ``freq_embed`` (h, w, C) bicubically to the stage's (H, W), as this does.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F


def resize_freq_embed(freq: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Bicubic resize (align_corners=False) of a (h, w, C) embedding to (H, W, C); identity if equal.

    Half-precision embeddings are resized in fp32 (bicubic has no fp16 CPU kernel) and cast back.
    Written so that TorchScript compiles it (``size``: any sequence of two ints).
    """
    h, w = int(size[0]), int(size[1])
    if freq.shape[0] == h and freq.shape[1] == w:
        return freq
    work = freq if freq.dtype == torch.float32 or freq.dtype == torch.float64 else freq.float()
    out = F.interpolate(work.permute(2, 0, 1).unsqueeze(0), size=[h, w], mode="bicubic", align_corners=False)
    return out[0].permute(1, 2, 0).to(freq.dtype)
