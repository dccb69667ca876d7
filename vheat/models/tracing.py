"""What graph tracers (torch.fx, TorchScript, torch.export / compile) see of the vHeat models.

The three functions below are FX leaves: their bodies check shapes, pick a backend or resize
to the input's size, so ``torch.fx.symbolic_trace`` and timm's FX feature extraction record one
call instead of tracing into them (``torch.fx.wrap`` for plain symbolic_trace, timm's
``register_notrace_function`` for timm's tracer). Callers use them as ``tracing.hco(...)``:
``torch.fx.wrap`` patches this module's globals, so the attribute look-up is what gets wrapped.
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers import register_notrace_function
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

import vheat_kernels

from .freq_embed import resize_freq_embed


def is_tracing() -> bool:
    """True inside torch.fx, torch.jit (trace or script), torch.compile and torch.export tracing.

    Traced forwards take the shape-independent path (no attenuation cache, no branching on the
    input's size); the shape checks run inside the leaves when the graph executes.
    """
    return is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


@register_notrace_function
@torch.fx.wrap
def hco(x: torch.Tensor, E: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """The Heat Conduction Operator through vheat_kernels (backend chosen when the graph runs)."""
    return vheat_kernels.heat_conduction(x, E, backend=backend)


@register_notrace_function
@torch.fx.wrap
def attenuation_from_rates(k: torch.Tensor) -> torch.Tensor:
    """E = D ** k for a rate map k (H, W, C); D depends on (H, W)."""
    return vheat_kernels.attenuation(k)


@register_notrace_function
@torch.fx.wrap
def freq_embed_like(freq: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The (h, w, C) embedding resized (bicubic) to the spatial size of the NCHW feature map x."""
    return resize_freq_embed(freq, x.shape[-2:])

