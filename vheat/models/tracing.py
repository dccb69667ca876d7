"""The vHeat model's calls that graph tracers (torch.fx, TorchScript, jit.trace, ONNX) record as one step.

The public functions below are FX leaves: their bodies check shapes, pick a backend or resize
to the input's size, so ``torch.fx.symbolic_trace`` and timm's FX feature extraction record one
call instead of tracing into them (``torch.fx.wrap`` for plain symbolic_trace, timm's
``register_notrace_function`` for timm's tracer). Callers use them as ``tracing.hco(...)``:
``torch.fx.wrap`` patches this module's globals, so the attribute look-up is what gets wrapped.
Each one also compiles under TorchScript, and is where the model's forward meets the
differences between tracers: the model code itself has no tracer branches.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

import vheat_kernels
from vheat_kernels.dct import compute_dtype

from .freq_embed import resize_freq_embed


def _build_maps_outside_jit_trace(h: int, w: int, device: torch.device, dtype: torch.dtype) -> None:
    # vheat_kernels caches its cosine / decay maps: torch.jit.trace would record how a map is
    # built on the first call and a constant on the next, and fail its own check ("Graphs
    # differed across invocations"). Built here with the tracer paused, both calls see constants.
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        vheat_kernels.dct_matrix(h, device, dtype), vheat_kernels.dct_matrix(w, device, dtype)
        vheat_kernels.decay_map(h, w, device, torch.float64)
    finally:
        torch._C._set_tracing_state(state)


@register_notrace_function
@torch.fx.wrap
def hco(x: torch.Tensor, E: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """The Heat Conduction Operator through vheat_kernels (backend chosen when the graph runs)."""
    if torch.jit.is_scripting():  # the fused kernel of x's device (see VHeat.__prepare_scriptable__)
        return torch.ops.vheat.hco_forward(x, E)
    else:
        if torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing():
            # torch.onnx.export(dynamo=True): record the op as 4 MatMul + Mul (the TorchScript
            # exporter, which jit-traces, keeps the op and lowers it by its registered symbolic).
            return vheat_kernels.onnx.hco_as_matmuls(x, E)
        if torch.jit.is_tracing():
            _build_maps_outside_jit_trace(x.shape[1], x.shape[2], x.device, x.dtype)
            if vheat_kernels.resolve_backend(x, E, backend).name in ("cpu", "cuda"):
                # The compiled backends pick the spectrum pair (forward + saved DCT2(x)) only when
                # grad is enabled; trace's check re-runs under no_grad, so record the plain
                # differentiable op in both (the C++ entry checks shapes and dtypes).
                return torch.ops.vheat.hco_forward(x, E)
        return vheat_kernels.heat_conduction(x, E, backend=backend)


def _traced_for_any_size() -> bool:
    # jit.trace records sizes as values; the TorchScript ONNX exporter (which traces) needs a
    # static (H, W, C) for the HCO's lowering, so there H and W stay the traced ones.
    return torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()


def _attenuation_in_graph(k: torch.Tensor) -> torch.Tensor:
    # vheat_kernels.attenuation without its map cache: log D = -((pi n / h)^2 + (pi m / w)^2)
    # is built from k's size inside the graph, so a scripted or traced graph runs at any size.
    dtype = compute_dtype(k.dtype)
    n = torch.arange(k.shape[0], dtype=torch.float64, device=k.device).view(-1, 1) * (math.pi / k.shape[0])
    m = torch.arange(k.shape[1], dtype=torch.float64, device=k.device).view(1, -1) * (math.pi / k.shape[1])
    log_d = (-(n * n + m * m)).to(dtype)
    return torch.exp(k.to(dtype) * log_d[:, :, None])


@register_notrace_function
@torch.fx.wrap
def attenuation_from_rates(k: torch.Tensor) -> torch.Tensor:
    """E = D ** k for a rate map k (H, W, C); D depends on (H, W)."""
    if torch.jit.is_scripting():
        return _attenuation_in_graph(k)
    else:
        if _traced_for_any_size():  # k.shape holds traced sizes here
            return _attenuation_in_graph(k)
        if torch.jit.is_tracing():
            _build_maps_outside_jit_trace(k.shape[0], k.shape[1], k.device, k.dtype)
        return vheat_kernels.attenuation(k)


def _resize_in_traced_graph(freq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # While jit.trace runs, x.shape holds traced sizes: passing them on (never int()) records a
    # resize to the input's size at run time. It is recorded even at the traced size, where
    # bicubic resizing returns its input exactly.
    work = freq if freq.dtype in (torch.float32, torch.float64) else freq.float()
    out = F.interpolate(work.permute(2, 0, 1).unsqueeze(0), size=x.shape[-2:], mode="bicubic", align_corners=False)
    return out[0].permute(1, 2, 0).to(freq.dtype)


@register_notrace_function
@torch.fx.wrap
def freq_embed_like(freq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The (h, w, C) embedding resized (bicubic) to the spatial size of the NCHW feature map x."""
    if torch.jit.is_scripting():
        return resize_freq_embed(freq, [x.shape[-2], x.shape[-1]])
    else:
        if _traced_for_any_size():
            return _resize_in_traced_graph(freq, x)
        return resize_freq_embed(freq, [x.shape[-2], x.shape[-1]])



@register_notrace_function
@torch.fx.wrap
def folded_attenuation(k_exp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A block's folded E for the (B, H, W, C) input x: the resolution it was folded at only."""
    if k_exp.shape[0] != x.shape[1] or k_exp.shape[1] != x.shape[2]:
        raise RuntimeError(
            "Heat2D: the folded k_exp is " + str((k_exp.shape[0], k_exp.shape[1])) + " but the input needs "
            + str((x.shape[1], x.shape[2])) + "; run the folded model at the resolution it was folded at, "
            "or keep a train-mode model (freq_embed, to_k) for other sizes"
        )
    return k_exp
