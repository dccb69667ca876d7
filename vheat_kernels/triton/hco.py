"""The 'triton' backend: launchers, the ``vheat::hco_triton`` op and its autograd.

``vheat_kernels.backends`` imports this module lazily and calls exactly two functions:
``unavailable_reason(x, E)`` and ``heat_conduction_triton(x, E)``.

The forward and backward are ``torch.library.triton_op`` ops launched through
``wrap_triton``, so ``torch.compile`` sees the kernels instead of graph-breaking. On a GPU
the block configuration is autotuned per (H, W, C, dtypes); under ``TRITON_INTERPRET=1``
(CPU tensors, how the tests run) the first configuration of ``configs.prune`` is used.
"""
from __future__ import annotations

import importlib
import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

from ..autograd import register_hco_autograd
from . import configs as cfg
from .chunks import backward_chunks
from . import kernels as _kernels_module

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The interpreter runs fp64 too (exact enough for gradcheck); GPU builds are not checked for it.
INTERPRETER_DTYPES = SUPPORTED_DTYPES + (torch.float64,)

_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float64: tl.float64}


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernels():
    """The kernels module, re-imported if TRITON_INTERPRET changed since it was imported.

    ``@triton.jit`` picks interpreter or compiler when it decorates, so a process that
    imported this package before setting TRITON_INTERPRET=1 would otherwise keep GPU-only
    kernels (and the other way round).
    """
    global _kernels_module
    if _kernels_module.INTERPRETED != interpreting():
        _kernels_module = importlib.reload(_kernels_module)
    return _kernels_module


def dtype_constants(dtype: torch.dtype, interpreted: bool) -> dict:
    """ROUND / DOT / ACC dtypes and dot precision for an input dtype (see kernels.py)."""
    round_dt = _TL[dtype]
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    # The interpreter's dot multiplies bf16 bit patterns as integers: feed it fp32 values
    # already rounded to bf16 instead.
    dot = tl.float32 if (interpreted and dtype == torch.bfloat16) else round_dt
    precision = "tf32x3" if dtype == torch.float32 else "ieee"
    return dict(ROUND_DTYPE=round_dt, DOT_DTYPE=dot, ACC_DTYPE=acc, PRECISION=precision)


def unavailable_reason(x: torch.Tensor, E: torch.Tensor) -> Optional[str]:
    """None when the fused Triton kernels can run on (x, E), else why not."""
    interp = interpreting()
    if x.device.type != "cuda" and not (interp and x.device.type == "cpu"):
        return f"it needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got x on {x.device}"
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) < (8, 0):
        return f"it needs a GPU of compute capability 8.0 or newer, got {torch.cuda.get_device_name(x.device)}"
    accepted = INTERPRETER_DTYPES if (interp and x.device.type == "cpu") else SUPPORTED_DTYPES
    if x.dtype not in accepted:
        names = ", ".join(str(d).replace("torch.", "") for d in accepted)
        return f"x has dtype {x.dtype}; the Triton kernels accept {names}"
    _, H, W, _ = x.shape
    if not cfg.fits(H, W, x.element_size()):
        side = cfg.max_side(x.element_size())
        return (
            f"H x W = {H} x {W} exceeds the fused kernel's on-chip plane for {x.dtype} (sides up to {side}, "
            "padded to a power of two); use the 'fft' backend ('auto' picks it)"
        )
    return None


def heat_conduction_triton(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Fused HCO, differentiable in x and E. Inputs are validated by the caller."""
    reason = unavailable_reason(x, E)
    if reason is not None:
        raise ValueError(f"heat_conduction_triton: {reason}")
    return torch.ops.vheat.hco_triton(x, E)


# --- launchers -------------------------------------------------------------------------


_COS_CACHE: dict[tuple, torch.Tensor] = {}


def _cos(n: int, like: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II matrix (n, n) in fp32 (fp64 for fp64 inputs), cached per device.

    Traced calls (torch.compile, opcheck under FakeTensorMode) build it uncached (a graph
    op), so a fake tensor never reaches later eager calls; ``dct.dct_matrix`` follows the
    same rule.
    """
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    tracing = is_fake(like) or torch.compiler.is_compiling()
    key = (n, like.device, dtype)
    if not tracing and key in _COS_CACHE:
        return _COS_CACHE[key]
    i = torch.arange(n, dtype=torch.float64, device=like.device)
    mat = torch.cos(math.pi * (i[None, :] + 0.5) * i[:, None] / n) * math.sqrt(2.0 / n)
    mat[0] = mat[0] / math.sqrt(2.0)
    mat = mat.to(dtype)
    if not tracing:
        _COS_CACHE[key] = mat
    return mat


def _programs_wanted(device: torch.device) -> int:
    # Two programs per SM on a GPU; a handful under the interpreter, so tests see chunking.
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def forward(x: torch.Tensor, E: torch.Tensor, config: Optional[cfg.BlockConfig] = None) -> torch.Tensor:
    """Launch the fused forward; ``config`` forces a block configuration (tests)."""
    x, E = x.contiguous(), E.contiguous()
    B, H, W, C = x.shape
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    k = kernels()
    consts = dict(HP=cfg.padded(H), WP=cfg.padded(W), **dtype_constants(x.dtype, k.INTERPRETED))
    args = (x, E, _cos(H, x), _cos(W, x), y, H, W, C)
    if config is None and not k.INTERPRETED:
        wrap_triton(k.hco_fwd_tuned)[lambda meta: (triton.cdiv(C, meta["BC"]), B)](*args, **consts)
    else:
        config = config or cfg.prune(H, W, C, x.element_size(), backward=False)[0]
        wrap_triton(k.hco_fwd_kernel)[(triton.cdiv(C, config.BC), B)](
            *args, BC=config.BC, num_warps=config.num_warps, num_stages=1, **consts
        )
    return y


def backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    E: torch.Tensor,
    need_dx: bool,
    need_dE: bool,
    config: Optional[cfg.BlockConfig] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dx = HCO(grad_y, E) and dE = sum_b DCT2(x) * DCT2(grad_y); unneeded ones are empty."""
    grad_y, x, E = grad_y.contiguous(), x.contiguous(), E.contiguous()
    B, H, W, C = x.shape
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    if not (need_dx or need_dE) or x.numel() == 0:
        dE = torch.zeros_like(E) if need_dE else E.new_empty(0)
        return dx, dE
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    widest = cfg.prune(H, W, C, x.element_size(), backward=True)[0].BC
    chunks = backward_chunks(B, C, _programs_wanted(x.device), widest) if need_dE else min(B, 65535)
    per_prog = math.ceil(B / chunks)
    chunks = math.ceil(B / per_prog)
    partials = torch.empty((chunks, H, W, C), device=x.device, dtype=acc_dtype) if need_dE else x.new_empty(0, dtype=acc_dtype)
    k = kernels()
    consts = dict(
        HP=cfg.padded(H), WP=cfg.padded(W), NEED_DX=need_dx, NEED_DE=need_dE, **dtype_constants(x.dtype, k.INTERPRETED)
    )
    # Unused pointers still need a valid tensor of the right dtype: pass x / grad_y.
    args = (x if need_dE else grad_y, grad_y, E, _cos(H, x), _cos(W, x), dx if need_dx else grad_y,
            partials, B, H, W, C, per_prog)
    if config is None and not k.INTERPRETED:
        wrap_triton(k.hco_bwd_tuned)[lambda meta: (triton.cdiv(C, meta["BC"]), chunks)](*args, **consts)
    else:
        config = config or cfg.prune(H, W, C, x.element_size(), backward=True)[0]
        wrap_triton(k.hco_bwd_kernel)[(triton.cdiv(C, config.BC), chunks)](
            *args, BC=config.BC, num_warps=config.num_warps, num_stages=1, **consts
        )
    if not need_dE:
        return dx, E.new_empty(0)
    # Fixed-order reduction over chunks: deterministic run to run.
    dE = partials[0] if chunks == 1 else partials.sum(dim=0)
    return dx, dE.to(E.dtype)


# --- ops and autograd ------------------------------------------------------------------


@triton_op("vheat::hco_triton", mutates_args=())
def _hco_triton(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    return forward(x, E)


@triton_op("vheat::hco_triton_backward", mutates_args=())
def _hco_triton_backward(
    grad_y: torch.Tensor, x: torch.Tensor, E: torch.Tensor, need_dx: bool, need_dE: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return backward(grad_y, x, E, need_dx, need_dE)


# Autograd to any order (double backward through the same two ops): vheat_kernels/autograd.py.
register_hco_autograd(torch.ops.vheat.hco_triton, torch.ops.vheat.hco_triton_backward)
