"""Shared measuring tools: interleaved timing, machine peaks (GEMM, copy), peak-RSS probe."""
from __future__ import annotations

import ctypes
import random
import statistics
import time
from typing import Callable, Dict

import torch


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit


def steady_allocator() -> bool:
    """Keep freed blocks of up to 32 MiB in the heap instead of unmapping them (glibc only).

    glibc hands large freed blocks back to the kernel and the next allocation of that size
    page-faults it in again, until its adaptive mmap threshold has risen past that size,
    which happens only after such frees. A fresh process and one that has run for a while
    therefore time the same op differently (the official matmul-DCT, with its large
    temporaries, up to twice as slow in a fresh process). Fixing the threshold makes every
    measurement the steady state a long-running job sees. Returns False where mallopt is
    missing (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def time_paired(fns: Dict[str, Callable[[], object]], min_time: float, min_reps: int = 3, max_reps: int = 50,
                warm_up: int = 2, clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Median ms of each fn, calls interleaved after ``warm_up`` calls of each, in a new
    (seeded) random order every round.

    Two warm-up calls, not one: the second call of a whole model is still slower than later
    ones (allocator growth, oneDNN primitive caches).

    Interleaving makes the ratios fair on a shared, noisy machine: load spikes hit every
    candidate alike instead of whichever happened to run at the time. The order is shuffled
    because a call finds the caches as its predecessor left them: in a fixed order one
    candidate would always follow the FFT backend's tens of MB of temporaries and another
    never would, a bias of the order rather than of the candidates. ``clock`` times each
    call (time.thread_time: CPU time of this thread, for one-thread runs on a shared machine).
    """
    for _ in range(warm_up):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    start = time.perf_counter()
    reps = 0
    while reps < min_reps or (time.perf_counter() - start < min_time * len(fns) and reps < max_reps):
        rng.shuffle(order)
        for name in order:
            fn = fns[name]
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
        reps += 1
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def gemm_peak_gflops(n: int = 1024, min_time: float = 0.3) -> float:
    """Achieved fp32 GFLOP/s of an n x n x n product on this machine, now: the faster of
    torch.matmul (MKL) and oneDNN's matmul, since the models may run either (vheat.models.linear),
    and which is faster depends on the CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    fns = {"mm": lambda: torch.matmul(a, b)}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        bt = b.t().contiguous()
        fns["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")
    ms = min(time_paired(fns, min_time).values())
    return 2 * n**3 / (ms * 1e-3) / 1e9


def copy_bandwidth_gbs(nbytes: int = 256 << 20, min_time: float = 0.3) -> float:
    """Achieved GB/s (bytes read + written) of a large fp32 tensor copy, now."""
    src = torch.randn(nbytes // 4)
    dst = torch.empty_like(src)
    ms = time_paired({"copy": lambda: dst.copy_(src)}, min_time)["copy"]
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_delta_mb(fn: Callable[[], object]) -> float:
    """Peak resident memory (MB) that fn() adds on top of the process's RSS before it.

    glibc's malloc_trim hands cached free memory back first and writing 5 to
    /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the current RSS,
    so VmHWM - VmRSS measures fn alone, in process (a forked child would hang in OpenMP).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


class SavedTensorBytes:
    """Context manager: unique storage bytes autograd saves for backward (parameters apart)."""

    def __init__(self, params=()):
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        self.storages: Dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self) -> "SavedTensorBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def activation_bytes(self) -> int:
        return sum(n for p, n in self.storages.items() if p not in self.param_ptrs)

    @property
    def total_bytes(self) -> int:
        return sum(self.storages.values())
