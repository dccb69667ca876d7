"""Which GEMM library vHeat's linear layers use on CPU: MKL (``F.linear``) or oneDNN.

PyTorch's CPU ``F.linear`` runs MKL's sgemm after writing the broadcast bias into the output,
and ``F.gelu`` is one more pass over the (4x wide) MLP hidden tensor; oneDNN's matmul applies
both in its epilogue while the output tile is still in registers
(``torch.ops.mkldnn._linear_pointwise``, the op Inductor emits for the same fusion). Which
library multiplies faster depends on the CPU (MKL picks its AVX-512 kernels only on Intel
CPUs, oneDNN JIT-compiles for whatever ISA it finds), so the choice is measured, not assumed:
``calibration()`` times vHeat-sized GEMMs both ways, once per process and thread count (a few
ms), and ``auto`` then sends every linear layer to oneDNN where it is clearly faster
(``ONEDNN_MARGIN``), else only the layers of the size rule (``worth_fusing``) in inference.
The measurements behind the rule and the margin are in docs/benchmarks.md
(benchmarks/bench_linear.py).

The mode has one carrier per layer, the narrower one winning: ``set_mode()`` (this module,
for the process; ``vheat train`` sets it through ``pin_training_library`` so that a resumed
run rounds its GEMMs as the run it continues), then ``$VHEAT_ONEDNN_LINEAR`` (the caller's
environment, read, never written). Modes: ``0`` F.linear everywhere; ``rule`` oneDNN by the
size rule in inference only; ``auto`` (default; ``1`` is the same) measured; ``always``
oneDNN wherever it can run, training included.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

MODES = ("0", "rule", "1", "auto", "always")
ACTIVATIONS = ("none", "gelu")
ENV_VAR = "VHEAT_ONEDNN_LINEAR"


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()
_mode_setting: Optional[str] = None


def _check_mode(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{source} must be 0, rule, auto (or 1) or always, got {mode!r}")
    return mode


def set_mode(mode: Optional[str]) -> None:
    """The GEMM library mode of this process (see the module docstring); None: $VHEAT_ONEDNN_LINEAR."""
    global _mode_setting
    _mode_setting = None if mode is None else _check_mode(mode, "linear.set_mode")


def mode() -> str:
    """The mode in force: set_mode's, else $VHEAT_ONEDNN_LINEAR, else 'auto'."""
    if _mode_setting is not None:
        return _mode_setting
    return _check_mode(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


# Where fusing pays when MKL is as fast as oneDNN: GELU (the fused epilogue saves a pass over
# the wide MLP hidden tensor) and large outputs (the bias pass and a fresh output buffer cost
# more than the GEMM's epilogue from about 4M elements). Below that a plain GEMM is within a
# few percent either way.
FUSE_MIN_OUTPUT = 1 << 22


def worth_fusing(rows: int, k: int, n: int, activation: str) -> bool:
    """The size rule: fuse for a (rows x k) @ (k x n) product with this activation."""
    return activation == "gelu" or rows * n >= FUSE_MIN_OUTPUT


# oneDNN for every layer when its GEMM is at least this much faster than MKL's here: far from
# the ratios of the machines measured (about 1.0 and 2.1), so noise cannot flip the choice.
ONEDNN_MARGIN = 1.3
# vHeat-T stage-3 MLP fc1 and stage-1 Heat2D linear at batch 1: (rows, k, n).
_CALIBRATION_SHAPES = ((196, 384, 1536), (3136, 96, 192))
_calibrations: Dict[int, Dict] = {}


def _fastest_ms(fns: Dict[str, object], reps: int = 5) -> Dict[str, float]:
    # The fastest of a few interleaved calls: what the machine can do, least moved by load
    # from other processes (a median follows the load, a minimum much less).
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
    current = mode()
    if not _AVAILABLE or current == "0":
        return "linear layers: F.linear (oneDNN " + ("not in this torch build)" if not _AVAILABLE else f"off: {ENV_VAR}=0)")
    if current in ("always", "rule"):
        return ("linear layers: oneDNN everywhere" if current == "always" else
                "linear layers: F.linear, oneDNN for GELU / large outputs in inference") + f" ({ENV_VAR}={current})"
    c = calibration()
    choice = "oneDNN everywhere" if c["onednn_everywhere"] else "F.linear, oneDNN for GELU / large outputs in inference"
    return f"linear layers: {choice} (MKL / oneDNN measured {c['speedup']:.2f}x at {c['threads']} thread(s))"


def _onednn_everywhere(current: str) -> bool:
    return current == "always" or (current in ("auto", "1") and calibration()["onednn_everywhere"])


def training_library() -> str:
    """'onednn' or 'mkl': the GEMM library a linear layer that needs gradients uses in this process."""
    current = mode()
    return "onednn" if _AVAILABLE and current != "0" and _onednn_everywhere(current) else "mkl"


def pin_training_library(library: Optional[str]) -> None:
    """Make this process train on ``library`` whatever its own calibration and
    $VHEAT_ONEDNN_LINEAR say (``set_mode`` 'always' or 'rule'), so that a run resumed in another
    process (or on another rank) rounds its GEMMs the same way; ``None`` releases the pin."""
    if library not in ("onednn", "mkl", None):
        raise ValueError(f"linear: library must be 'onednn' or 'mkl', got {library!r}")
    set_mode(None if library is None else "always" if library == "onednn" else "rule")


def needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none") -> bool:
    """Whether ``linear(x, weight, bias, activation)`` runs on oneDNN for these arguments now
    (the fused op in inference, ``OneDNNLinearFunction`` when a gradient is needed).

    TorchScript, torch.fx / jit tracing and torch.compile record ``F.linear`` (Inductor picks
    its own GEMMs), as do CPU autocast (bf16 GEMMs), other devices and dtypes other than
    float32: the same function to float rounding.
    """
    current = mode()
    if not _AVAILABLE or current == "0":
        return False
    if is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
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
    if _onednn_everywhere(current):
        return True
    return not needs_grad(x, weight, bias) and worth_fusing(x.numel() // x.shape[-1], x.shape[-1], weight.shape[0], activation)
