"""Frequency embeddings at run-time resolutions, and a cache of the attenuations built from them.

The official classifier only runs at its training resolution; its detection wrapper resizes
each stage's ``freq_embed`` (h, w, C) bicubically to the stage's (H, W). ``AttenuationCache``
keeps the per-block E = D ** to_k(freq) of an eval-mode, no-grad model per resolution, keyed
by the identity and version counters of the weights it came from, so that optimizer steps,
``load_state_dict`` and ``.to()`` all invalidate it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Iterable, List

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


def _version_token(tensors: Iterable[torch.Tensor]) -> tuple:
    token = []
    for t in tensors:
        try:
            version = t._version
        except RuntimeError:  # inference tensors carry no version counter: never reuse them
            return (object(),)
        token.append((t.data_ptr(), version, t.dtype, t.device))
    return tuple(token)


class AttenuationCache:
    """LRU cache of per-block attenuation lists, keyed by (stage, H, W) and the source weights' versions."""

    def __init__(self, max_entries: int = 32):
        self.max_entries = max_entries
        self._entries: "OrderedDict[Hashable, tuple]" = OrderedDict()

    def get(
        self, key: Hashable, sources: Iterable[torch.Tensor], build: Callable[[], List[torch.Tensor]]
    ) -> List[torch.Tensor]:
        token = _version_token(sources)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == token:
            self._entries.move_to_end(key)
            return hit[1]
        value = build()
        self._entries[key] = (token, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
