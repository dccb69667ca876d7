"""The linear function and layer vHeat's blocks call: oneDNN where ``library`` chooses it, else F.linear.

Inference (no gradient needed) uses oneDNN's fused op directly (bias and GELU in the GEMM's
epilogue). Training on a oneDNN machine goes through ``OneDNNLinearFunction``; the GELU then
stays a separate op, since its backward needs the pre-activation. ``linear`` is an FX leaf: a
``torch.fx`` graph (timm's feature extractor included) calls it when it runs, so the graph
takes the eager model's GEMM library and matches it bitwise. TorchScript compiles only its
plain ``F.linear`` path.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from . import library
from .onednn import OneDNNLinearFunction


@register_notrace_function  # timm's FX tracer
@torch.fx.wrap  # plain torch.fx.symbolic_trace
def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, activation: str = "none") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` with act in ("none", "gelu"); GELU is the exact (erf) one, as nn.GELU()."""
    if torch.jit.is_scripting():
        pass  # TorchScript compiles only the plain path below
    else:
        if activation not in library.ACTIVATIONS:
            raise ValueError(f"linear: activation must be one of {library.ACTIVATIONS}, got '{activation}'")
        if library.uses_onednn(x, weight, bias, activation):
            if library.needs_grad(x, weight, bias):
                y = OneDNNLinearFunction.apply(x.reshape(-1, x.shape[-1]), weight, bias)
                y = y.view(*x.shape[:-1], weight.shape[0])
                return F.gelu(y) if activation == "gelu" else y
            # algorithm "none" selects oneDNN's erf GELU (tanh would be "tanh"); "" for no post-op.
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none" if activation == "gelu" else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if activation == "gelu" else y


class FusedLinear(nn.Linear):
    """``nn.Linear`` (same parameters, init and state_dict) whose forward goes through ``linear``.

    A layer swapped in for it (LoRA, quantized) or a hook on it works as on any module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
