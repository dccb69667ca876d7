"""Linear layers on CPU through oneDNN where it is the faster GEMM library on this machine.

PyTorch's CPU ``F.linear`` runs MKL's sgemm after writing the broadcast bias into the output,
and ``F.gelu`` is one more pass over the (4x wide) MLP hidden tensor; oneDNN's matmul applies
both in its epilogue while the output tile is still in registers
(``torch.ops.mkldnn._linear_pointwise``, the op Inductor emits for the same fusion). Which
library multiplies faster depends on the CPU: MKL picks its AVX-512 kernels only on Intel
CPUs, oneDNN JIT-compiles for whatever ISA it finds. Measured with one thread (vHeat-T's
linear shapes): on an Intel Xeon (AVX-512) oneDNN runs the layers without GELU at 0.77-1.3x MKL's speed
(median 0.95x, benchmarks/results/linear_cpu.json) and the fusion pays only for the GELU and
large outputs; on an AMD EPYC with AVX-512 oneDNN is 1.9-2.9x
faster than MKL at every vHeat-T shape (benchmarks/results/linear_cpu_epyc.json). So the choice is measured, not assumed: ``calibration()``
times one vHeat-sized GEMM both ways, once per process and thread count (a few ms), and
``auto`` then sends every linear layer to oneDNN where it is clearly faster
(``ONEDNN_MARGIN``), else only the layers of the size rule (``worth_fusing``) in inference.

Inference (no gradient needed) uses the fused op directly. Training on a oneDNN machine goes
through ``_OneDNNLinear``, whose backward is two more oneDNN GEMMs on strided views (no
transposed copies); the GELU then stays a separate op, since its backward needs the
pre-activation. Double backward (create_graph) runs through differentiable ``torch.matmul``.
``linear`` is an FX leaf: a ``torch.fx`` graph (timm's feature extractor included) calls it
when it runs, so the graph takes the eager model's GEMM library and matches it bitwise.
TorchScript (script and trace), ``torch.compile`` / ``torch.export`` (Inductor picks its own
GEMMs), fvcore FLOP counts, CPU autocast, non-CPU devices and dtypes other than float32 take
``F.linear`` (+ ``F.gelu``), which computes the same function to float rounding.
``VHEAT_ONEDNN_LINEAR=0`` turns oneDNN off, ``rule`` keeps to the size rule, ``always`` uses
oneDNN wherever it can run (training included), ``auto`` (default) measures. ``vheat train``
pins its run's choice (``pin_training_library``, recorded in the checkpoints) for the rest of
the process, so a resumed run is bitwise the run it continues; the pin lives in this module,
never in ``os.environ`` (a library must not change its caller's environment).
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

ACTIVATIONS = ("none", "gelu")


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()


# Set by pin_training_library: the mode this process keeps whatever its environment says.
_pinned_mode: Optional[str] = None


def _mode() -> str:
    if _pinned_mode is not None:
        return _pinned_mode
    mode = os.environ.get("VHEAT_ONEDNN_LINEAR", "auto")
    if mode not in MODES:
        raise ValueError(f"VHEAT_ONEDNN_LINEAR must be 0, rule, auto (or 1) or always, got {mode!r}")
    return mode


# 0: F.linear everywhere; rule: oneDNN by the size rule in inference only (what auto does where
# MKL is as fast); auto: measured (calibration); always: oneDNN wherever it can run.
MODES = ("0", "rule", "1", "auto", "always")


# Where fusing pays when MKL is as fast as oneDNN (benchmarks/bench_linear.py on an Intel Xeon:
# vHeat-T's linear layers at batch 1/4/16, one thread): GELU (fc1 + GELU 1.00-1.75x, most on
# the wide stage-1/2 hidden tensors) and large outputs (the bias pass and a fresh output
# buffer cost more than the GEMM's epilogue; 1.1-1.4x at >= 4M elements). Below that a plain
# GEMM is within a few percent, MKL mostly ahead.
FUSE_MIN_OUTPUT = 1 << 22


def worth_fusing(rows: int, k: int, n: int, activation: str) -> bool:
    """The size rule: fuse for a (rows x k) @ (k x n) product with this activation."""
    return activation == "gelu" or rows * n >= FUSE_MIN_OUTPUT


# oneDNN for every layer when its GEMM is at least this much faster than MKL's here: far
# from both machines measured (about 1.0 and 2.1), so noise cannot flip the choice.
ONEDNN_MARGIN = 1.3
# vHeat-T stage-3 MLP fc1 and stage-1 Heat2D linear at batch 1: (rows, k, n).
_CALIBRATION_SHAPES = ((196, 384, 1536), (3136, 96, 192))
_calibrations: Dict[int, Dict] = {}


def _fastest_ms(fns: Dict[str, object], reps: int = 5) -> Dict[str, float]:
    # The fastest of a few interleaved calls: what the machine can do, least moved by load
    # from other processes (2 threads, the other core busy: the median gave 1.37x, the minimum 1.95x).
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up: oneDNN compiles its kernel on the first call
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: min(v) * 1e3 for k, v in times.items()}


def calibration() -> Dict:
    """MKL (``F.linear``) vs oneDNN on vHeat-sized GEMMs, measured once per thread count.

    Returns ``{"threads", "mkl_ms", "onednn_ms", "speedup", "onednn_everywhere"}``; speedup is
    the smallest MKL / oneDNN ratio over the shapes.
    """
    threads = torch.get_num_threads()
    if threads not in _calibrations:
        mkl = onednn = 0.0
        ratios = []
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            for m, k, n in _CALIBRATION_SHAPES:
                x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
                ms = _fastest_ms({"mkl": lambda: F.linear(x, w, b),
                                 "onednn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")})
                mkl, onednn = mkl + ms["mkl"], onednn + ms["onednn"]
                ratios.append(ms["mkl"] / ms["onednn"])
        _calibrations[threads] = {"threads": threads, "mkl_ms": mkl, "onednn_ms": onednn, "speedup": min(ratios),
                                  "onednn_everywhere": min(ratios) >= ONEDNN_MARGIN}
    return _calibrations[threads]


def describe() -> str:
    """One line for run logs: which GEMM library the linear layers use here, and why."""
    mode = _mode()
    if not _AVAILABLE or mode == "0":
        return "linear layers: F.linear (oneDNN " + ("not in this torch build)" if not _AVAILABLE else "off: VHEAT_ONEDNN_LINEAR=0)")
    if mode in ("always", "rule"):
        return ("linear layers: oneDNN everywhere" if mode == "always" else
                "linear layers: F.linear, oneDNN for GELU / large outputs in inference") + f" (VHEAT_ONEDNN_LINEAR={mode})"
    c = calibration()
    choice = "oneDNN everywhere" if c["onednn_everywhere"] else "F.linear, oneDNN for GELU / large outputs in inference"
    return f"linear layers: {choice} (MKL / oneDNN measured {c['speedup']:.2f}x at {c['threads']} thread(s))"


def _onednn_everywhere(mode: str) -> bool:
    return mode == "always" or (mode in ("auto", "1") and calibration()["onednn_everywhere"])


def training_library() -> str:
    """'onednn' or 'mkl': the GEMM library a linear layer that needs gradients uses in this process."""
    mode = _mode()
    return "onednn" if _AVAILABLE and mode != "0" and _onednn_everywhere(mode) else "mkl"


def pin_training_library(library: Optional[str]) -> None:
    """Make this process train on ``library`` whatever its own calibration and
    $VHEAT_ONEDNN_LINEAR say, so that a run resumed in another process (or on another rank)
    rounds its GEMMs the same way; ``None`` releases the pin."""
    global _pinned_mode
    if library not in ("onednn", "mkl", None):
        raise ValueError(f"fused_linear: library must be 'onednn' or 'mkl', got {library!r}")
    _pinned_mode = None if library is None else "always" if library == "onednn" else "rule"


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none") -> bool:
    """Whether ``linear(x, weight, bias, activation)`` runs on oneDNN for these arguments now
    (fused op in inference, ``_OneDNNLinear`` when a gradient is needed)."""
    mode = _mode()
    if not _AVAILABLE or mode == "0":
        return False
    if is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):  # F.linear follows autocast (bf16 GEMMs); the oneDNN op would not
        return False
    tensors = [x, weight] + ([bias] if bias is not None else [])
    if not (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in tensors)
        and weight.dim() == 2
        and x.dim() >= 2
        and x.is_contiguous()
        and weight.is_contiguous()
        and x.numel() > 0
    ):
        return False
    if _onednn_everywhere(mode):
        return True
    return not _needs_grad(x, weight, bias) and worth_fusing(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0], activation)


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ w.T + b on oneDNN, forward and backward (x 2-D, contiguous)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            dx = dy @ weight if ctx.needs_input_grad[0] else None
            dw = dy.t() @ x if ctx.needs_input_grad[1] else None
        else:
            dy = dy.contiguous()
            # Transposed operands as strided views: oneDNN reads them in place. For a long
            # reduction (rows >= k, n) dW is computed as (x^T dy)^T, with the row-long operands
            # as oneDNN's "weight" (vHeat-T stage 1 at batch 16, 50176x96x384, one thread, AMD
            # EPYC: 29.5 ms, against 66.8 ms as dy^T x and 39.6 ms on MKL); for a short one
            # (stage 4 at batch 1, 49 rows) as dy^T x (1.7-1.9x MKL there, (x^T dy)^T 0.85-1.2x).
            if ctx.needs_input_grad[0]:
                dx = torch.ops.mkldnn._linear_pointwise(dy, weight.t(), None, "none", [], "")
            if ctx.needs_input_grad[1]:
                if x.shape[0] >= max(x.shape[1], dy.shape[1]):
                    dw = torch.ops.mkldnn._linear_pointwise(x.t(), dy.t(), None, "none", [], "").t()
                else:
                    dw = torch.ops.mkldnn._linear_pointwise(dy.t(), x.t(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, dw, db


@register_notrace_function  # timm's FX tracer
@torch.fx.wrap  # plain torch.fx.symbolic_trace; callers use fused_linear.linear (see tracing.py)
def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, activation: str = "none") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` with act in ("none", "gelu"); GELU is the exact (erf) one, as nn.GELU()."""
    if torch.jit.is_scripting():
        pass  # TorchScript compiles only the plain path below
    else:
        if activation not in ACTIVATIONS:
            raise ValueError(f"fused_linear.linear: activation must be one of {ACTIVATIONS}, got '{activation}'")
        if uses_onednn(x, weight, bias, activation):
            if _needs_grad(x, weight, bias):
                y = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])
                return F.gelu(y) if activation == "gelu" else y
            # algorithm "none" selects oneDNN's erf GELU (tanh would be "tanh"); "" for no post-op.
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "none" if activation == "gelu" else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if activation == "gelu" else y


def linear_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an ``nn.Linear``, through ``linear`` (fused where it applies) when the
    module is a plain, hook-free ``nn.Linear``. Anything else (a subclass, a LoRA or quantized
    replacement, a module with forward hooks) runs its own forward, so swapping or hooking
    the layer keeps working. FX graphs record the ``linear`` leaf too, so that they run the
    eager model's GEMMs."""
    if type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks):
        return linear(x, module.weight, module.bias)
    return module(x)
