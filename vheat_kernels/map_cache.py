"""A thread-safe LRU of tensors under a byte budget: the Python twin of the C++ table cache.

Cosine matrices and decay maps are cached per (size, device, dtype); a model fed many input
sizes (multi-scale detection meets a new size every few images) would otherwise keep one
entry per size forever. Entries are evicted least recently used first once the budget is
exceeded; an entry larger than the whole budget is built and returned but not kept.
"""
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Iterator, List

import torch

# As the C++ cosine-table LRU (csrc/cpu): 32 MB holds every map vHeat's classification sizes
# need, with room for a few detection sizes (a 1024-side fp32 DCT matrix is 4 MB).
DEFAULT_BUDGET_BYTES = 32 << 20


class TensorLRU:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.budget_bytes = budget_bytes
        self._entries: "OrderedDict[Hashable, torch.Tensor]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                return value
        value = build()  # outside the lock: building may take a while; a racing twin is harmless
        size = value.numel() * value.element_size()
        if size > self.budget_bytes:
            return value
        with self._lock:
            if key not in self._entries:
                self._entries[key] = value
                self._bytes += size
                self._evict()
        return value

    def _evict(self) -> None:
        while self._bytes > self.budget_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    def set_budget(self, budget_bytes: int) -> None:
        with self._lock:
            self.budget_bytes = budget_bytes
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._entries))

    def values(self) -> List[torch.Tensor]:
        with self._lock:
            return list(self._entries.values())
