"""Frequency embeddings at run-time resolutions, and a cache of the attenuations built from them.

The official classifier only runs at its training resolution; its detection wrapper resizes
each stage's ``freq_embed`` (h, w, C) bicubically to the stage's (H, W). ``AttenuationCache``
keeps the per-block E = D ** to_k(freq) of an eval-mode, no-grad model per resolution and
serves it only while the stage's source tensors (freq_embed, to_k's parameters and buffers,
k_exp) are the ones it was built from, with the same values. Version counters alone miss
writes through ``.data`` (a tensor with its own counter) and a new pruning mask, so the
cache also keeps a copy of the sources and compares values on every look-up: one read of
each per forward (vHeat-T: 2.7 M values, about 2.5 ms for the four stages at one thread on
a 2-core AMD EPYC) and one copy in memory (vHeat-T 10 MB, vHeat-B 30 MB).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Hashable, Iterable, List, Tuple

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


def _identity(tensors: List[torch.Tensor]) -> tuple:
    """What tells tensors apart without reading them: a changed shape, layout, storage or
    (where there is one: inference tensors have none) version counter."""
    token = []
    for t in tensors:
        try:
            version = t._version
        except RuntimeError:
            version = None
        token.append((t.data_ptr(), version, t.shape, t.stride(), t.dtype, t.device))
    return tuple(token)


class _Sources:
    """A stage's source tensors as they were when its attenuations were built."""

    def __init__(self, tensors: List[torch.Tensor]):
        self.identity = _identity(tensors)
        self.values = [t.detach().clone() for t in tensors]

    def match(self, tensors: List[torch.Tensor]) -> bool:
        return _identity(tensors) == self.identity and all(torch.equal(a, b) for a, b in zip(tensors, self.values))


def _nbytes(value: List[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in value)


class AttenuationCache:
    """LRU cache of per-block attenuation lists, keyed by (stage, H, W), valid while the stage's
    source tensors are unchanged (see the module docstring for what is compared).

    Bounded by entries (``max_entries``, 32: eight resolutions of a four-stage model) and by
    bytes (``max_bytes``, 256 MB: vHeat-T needs 6 MB per resolution around 224, but 50 MB for
    stage 1 alone at a 1024 x 1024 input); the entry just built is always kept, even alone
    over the budget.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 << 20):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: "OrderedDict[Tuple[Hashable, ...], List[torch.Tensor]]" = OrderedDict()
        self._sources: Dict[Hashable, _Sources] = {}

    def get(
        self, key: Tuple[Hashable, ...], sources: Iterable[torch.Tensor], build: Callable[[], List[torch.Tensor]]
    ) -> List[torch.Tensor]:
        """``key[0]`` names the stage whose ``sources`` the entries of that stage depend on."""
        stage, sources = key[0], list(sources)
        known = self._sources.get(stage)
        if known is None or not known.match(sources):
            for old in [k for k in self._entries if k[0] == stage]:
                del self._entries[old]
            self._sources[stage] = _Sources(sources)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        value = self._entries[key] = build()
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or sum(map(_nbytes, self._entries.values())) > self.max_bytes
        ):
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self._sources.clear()

    def __len__(self) -> int:
        return len(self._entries)
