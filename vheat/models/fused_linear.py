"""Linear layers (+ GELU) with the bias and activation fused into the GEMM, for CPU inference.

PyTorch's CPU ``F.linear`` first writes the broadcast bias into the output and then runs the
GEMM with beta=1, and ``F.gelu`` is one more pass over the (4x wide) MLP hidden tensor;
oneDNN's matmul applies both in its epilogue while the output tile is still in registers
(``torch.ops.mkldnn._linear_pointwise``, the op Inductor emits for the same fusion). Measured
here on vHeat-T's stage-1 MLP at batch 16, one thread: fc1 + GELU 95 -> 55 ms.

The fused op has no autograd formula, so it runs only where no gradient is needed (eval,
``torch.no_grad`` / ``inference_mode``); training, tracing (fvcore FLOP counts), scripting,
``torch.compile`` (Inductor fuses on its own), FX tracing (the graph keeps ``nn.Linear`` calls), non-CPU devices and dtypes other than float32
take ``F.linear`` (+ ``F.gelu``), which computes the same function; so do the sizes where the
fusion does not pay (``worth_fusing``). ``VHEAT_ONEDNN_LINEAR=0`` turns the fused path off,
``VHEAT_ONEDNN_LINEAR=always`` ignores the size rule (to measure either, or to rule it out).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

ACTIVATIONS = ("none", "gelu")


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()


def _mode() -> str:
    mode = os.environ.get("VHEAT_ONEDNN_LINEAR", "auto")
    if mode not in ("0", "1", "auto", "always"):
        raise ValueError(f"VHEAT_ONEDNN_LINEAR must be 0, auto (or 1) or always, got {mode!r}")
    return mode


# Where fusing pays (benchmarks/bench_linear.py: vHeat-T's linear layers at batch 1/4/16, one
# thread): GELU (fc1 + GELU 1.00-1.75x, most on the wide stage-1/2 hidden tensors) and large
# outputs (the bias pass and a fresh output buffer cost more than the GEMM's epilogue; 1.1-1.4x
# at >= 4M elements). Below that a plain GEMM is within a few percent, MKL mostly ahead.
FUSE_MIN_OUTPUT = 1 << 22


def worth_fusing(rows: int, k: int, n: int, activation: str) -> bool:
    """The size rule: fuse for a (rows x k) @ (k x n) product with this activation."""
    return activation == "gelu" or rows * n >= FUSE_MIN_OUTPUT


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none") -> bool:
    """Whether ``linear(x, weight, bias, activation)`` takes the fused oneDNN path for these arguments now."""
    mode = _mode()
    if not _AVAILABLE or mode == "0":
        return False
    if is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    tensors = [x, weight] + ([bias] if bias is not None else [])
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in tensors)
        and weight.dim() == 2
        and x.dim() >= 2
        and x.is_contiguous()
        and weight.is_contiguous()
        and x.numel() > 0
        and (mode == "always" or worth_fusing(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0], activation))
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, activation: str = "none") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` with act in ("none", "gelu"); GELU is the exact (erf) one, as nn.GELU()."""
    if torch.jit.is_scripting():
        pass  # TorchScript compiles only the plain path below
    else:
        if activation not in ACTIVATIONS:
            raise ValueError(f"fused_linear.linear: activation must be one of {ACTIVATIONS}, got '{activation}'")
        if uses_onednn(x, weight, bias, activation):
            # algorithm "none" selects oneDNN's erf GELU (tanh would be "tanh"); "" for no post-op.
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none" if activation == "gelu" else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if activation == "gelu" else y


def linear_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an ``nn.Linear``, through ``linear`` (fused where it applies) when the
    module is a plain, hook-free ``nn.Linear``. Anything else (a subclass, a LoRA or quantized
    replacement, a module with forward hooks) runs its own forward, so swapping or hooking
    the layer keeps working."""
    if type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks or is_fx_symbolic_tracing()):
        return linear(x, module.weight, module.bias)
    return module(x)
