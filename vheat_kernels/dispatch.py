"""The one place that chooses an HCO backend.

The backend setting has one carrier per layer, and the nearer one wins (call > module >
process):

1. call: ``heat_conduction(x, E, backend=...)``;
2. module: the ``backend`` attribute of the module making the call
   (``vheat_kernels.HeatConduction``; vHeat's layers carry theirs the same way), passed
   to the call, so a module's setting is a call argument by the time it reaches here;
3. process: the environment variable ``VHEAT_HCO_BACKEND`` (:data:`ENV_VAR`);
4. otherwise ``auto``.

A backend asked for by name that cannot run on the given tensors raises
:class:`BackendUnavailableError`; only ``auto`` chooses, and it never picks something
that cannot run.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

ENV_VAR = "VHEAT_HCO_BACKEND"

# On CPU tensors auto prefers the fused kernel, except for single-channel planes from 64 x 64
# to 2048 x 2048, where it picks fft. The fused kernel vectorises across 16 channels (8 in
# fp64), so one channel leaves 15 of 16 lanes idle, while torch.fft (MKL) transforms the
# contiguous plane directly; above 2048 x 2048 the FFT is memory bound and the fused kernel
# wins again, and from two channels on the fused kernel is as fast or faster (every vHeat
# shape, C >= 96, is several times faster fused; measurements in CHANGELOG.md). Long odd or
# prime sides need no rule: the cpu backend itself takes an FFT path there
# (csrc/cpu/fft_path.cpp). fft stays the choice where the op library is missing, and on
# devices without a kernel. Inside torch.compile the cpu backend serves every CPU shape
# (see _cpu_prefers_fft).
_CPU_FFT_PLANE = (64 * 64, 2048 * 2048)


def _cpu_prefers_fft(x: torch.Tensor) -> bool:
    # Not inside torch.compile: Inductor lowers the fft backend's complex FFTs and
    # reorderings for tens of seconds per shape, while it keeps the cpu backend's op opaque
    # (a few seconds); the fft speed-up is a few milliseconds per call.
    if torch.compiler.is_compiling():
        return False
    return x.shape[3] == 1 and _CPU_FFT_PLANE[0] <= x.shape[1] * x.shape[2] <= _CPU_FFT_PLANE[1]


class BackendUnavailableError(RuntimeError):
    """A backend was requested by name but cannot run on these inputs / this build."""


@dataclass(frozen=True)
class Backend:
    name: str
    # Returns None when the backend can run on (x, E), else the reason it cannot.
    unavailable_reason: Callable[[torch.Tensor, torch.Tensor], Optional[str]]
    # Differentiable implementation: (x, E) -> y.
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    _BACKENDS[backend.name] = backend


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def available_backends(x: torch.Tensor, E: torch.Tensor) -> list[str]:
    """Names of the backends that can run on these tensors."""
    return [name for name, b in _BACKENDS.items() if b.unavailable_reason(x, E) is None]


# On CUDA tensors auto reads one table, AUTO_TABLE_FILE: {"<dtype> <H>x<W> <pass>": backend}
# for vHeat's classification planes, pass "inference" (no gradient wanted) or "training".
# It is written from the roofline of each backend's launch plans (benchmarks/bytes_model.py
# --update) and, once a GPU has run `make gpu-check`, from its measurements (--measured);
# docs/bytes_model.md shows the numbers behind every entry. The table's pick goes first,
# then the default order below; each backend's unavailable_reason (device capability
# against the compiled CUDA archs, triton's sm_80 minimum and plane limits, dtype) removes
# what cannot run, so auto never picks one.
#  * float32 / bfloat16 / float16: triton, cuda (both fused: one read of x, tensor-core
#    transforms), then reference (four cuBLAS matmuls, ~10 passes over the tensor) before
#    fft (about 40 elementwise passes: each DCT is a reorder, a complex FFT and a twiddle),
#    e.g. on pre-sm_80 GPUs or builds without the CUDA kernels.
#  * float64: triton has no fp64 GPU kernels. cuda (fp64 FMA) then reference, with fft
#    first once H + W > CUDA_FP64_LINES_MAX_HW: on FMA units the CUDA line path does
#    2(H + W) multiply-adds per element at about a third of the peak, and meets the fft
#    backend's ~640 B per element at H + W of about 335 (A100) to 535 (H100 SXM).
CUDA_FP64_LINES_MAX_HW = 384
AUTO_TABLE_FILE = Path(__file__).with_name("auto_table.json")


@functools.lru_cache(maxsize=1)
def auto_table() -> dict[str, str]:
    """{"<dtype> <H>x<W> <pass>": backend} from AUTO_TABLE_FILE (empty if it is missing)."""
    try:
        return dict(json.loads(AUTO_TABLE_FILE.read_text())["entries"])
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:  # a damaged install: say so, not deep in a call
        raise RuntimeError(f"{AUTO_TABLE_FILE} is unreadable ({type(exc).__name__}: {exc}); reinstall "
                           "vheat-kernels or rewrite it with `python benchmarks/bytes_model.py --update`") from exc


def auto_table_key(dtype: torch.dtype, H: int, W: int, training: bool) -> str:
    return f"{str(dtype).replace('torch.', '')} {H}x{W} {'training' if training else 'inference'}"


def cuda_order(x: torch.Tensor, training: bool = False) -> list[str]:
    """Backends auto tries, in order, for a CUDA tensor x (B, H, W, C); ``training``: a
    gradient will be taken (the table's "training" entries weigh the backward too)."""
    if x.dtype == torch.float64:
        big = x.dim() == 4 and x.shape[1] + x.shape[2] > CUDA_FP64_LINES_MAX_HW
        order = ["fft", "cuda", "reference"] if big else ["cuda", "reference", "fft"]
    else:
        order = ["triton", "cuda", "reference", "fft"]
    if x.dim() == 4:
        pick = auto_table().get(auto_table_key(x.dtype, x.shape[1], x.shape[2], training))
        if pick in order:
            order.remove(pick)
            order.insert(0, pick)
    return order


def _wants_grad(x: torch.Tensor, E: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and (getattr(x, "requires_grad", False) or getattr(E, "requires_grad", False))


def _auto(x: torch.Tensor, E: torch.Tensor) -> str:
    if x.device.type == "cuda":
        order = cuda_order(x, _wants_grad(x, E))
    elif x.device.type == "cpu":
        order = ["fft", "cpu", "reference"] if _cpu_prefers_fft(x) else ["cpu", "fft", "reference"]
    else:
        order = ["fft", "reference"]
    for name in order:
        b = _BACKENDS.get(name)
        if b is not None and b.unavailable_reason(x, E) is None:
            return name
    return "reference"


def resolve_backend(x: torch.Tensor, E: torch.Tensor, requested: Optional[str] = None) -> Backend:
    """Pick the backend for (x, E): ``requested`` > $VHEAT_HCO_BACKEND > auto."""
    backend = _BACKENDS.get(requested)  # the common case first: an exact registered name
    if backend is None:
        name = requested if requested is not None else os.environ.get(ENV_VAR, "auto") or "auto"
        name = name.strip().lower()
        if name == "auto":
            return _BACKENDS[_auto(x, E)]
        if name not in _BACKENDS:
            source = "backend argument" if requested is not None else f"${ENV_VAR}"
            raise ValueError(
                f"heat_conduction: unknown backend {name!r} (from the {source}); "
                f"accepted: 'auto', {', '.join(repr(n) for n in _BACKENDS)}"
            )
        backend = _BACKENDS[name]
    reason = backend.unavailable_reason(x, E)
    if reason is not None:
        raise BackendUnavailableError(
            f"heat_conduction: backend {backend.name!r} cannot run here: {reason}. "
            f"Available for these inputs: {', '.join(available_backends(x, E))} (or 'auto')."
        )
    return backend
