"""The HCO backends: where each can run (its ``unavailable_reason``) and what it calls,
registered with the dispatcher (dispatch.py chooses among them)."""
from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch

from . import reference
from ._extension import build_info, extension_available, require_extension
from .cuda_arch import arch_reason, device_capability
from .dispatch import Backend, register_backend
from .ops import hco_compiled


def _always(x: torch.Tensor, E: torch.Tensor) -> Optional[str]:
    return None


def _compiled_reason(x: torch.Tensor, E: torch.Tensor, device_type: str) -> Optional[str]:
    if not extension_available():
        try:
            require_extension()
        except RuntimeError as exc:
            return str(exc)
    if not (x.is_cpu if device_type == "cpu" else x.is_cuda):  # flags: no device object per call
        return f"it needs {device_type} tensors, got x on {x.device}"
    if device_type == "cuda" and not build_info().get("cuda", False):
        return "the op library was built without CUDA kernels (see README: building the CUDA backend)"
    return None


def _cuda_reason(x: torch.Tensor, E: torch.Tensor) -> Optional[str]:
    reason = _compiled_reason(x, E, "cuda")
    if reason is not None:
        return reason
    max_axis = build_info()["cuda_max_axis"]  # kMaxAxis, csrc/cuda/hco_plan.h
    if x.dim() == 4 and max(x.shape[1], x.shape[2]) > max_axis:
        return f"H and W must be <= {max_axis} for the CUDA kernels, got H={x.shape[1]}, W={x.shape[2]}"
    return arch_reason(device_capability(x.device), build_info())


_triton_state: list = []  # [(module or None, reason)] once imported; plain state for torch.compile


def _triton_module():
    if not _triton_state:
        try:
            _triton_state.append((importlib.import_module("vheat_kernels.triton.hco"), None))
        except ImportError as exc:
            _triton_state.append((None, f"{type(exc).__name__}: {exc}"))
    return _triton_state[0]


def _triton_reason(x: torch.Tensor, E: torch.Tensor) -> Optional[str]:
    module, reason = _triton_module()
    if module is None:
        return f"the Triton kernels cannot be imported ({reason})"
    return module.unavailable_reason(x, E)


def _triton_hco(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    module, reason = _triton_module()
    if module is None:
        raise RuntimeError(f"the Triton kernels cannot be imported ({reason})")
    return module.heat_conduction_triton(x, E)


register_backend(Backend("reference", _always, reference.hco_matmul_dct))
register_backend(Backend("fft", _always, reference.hco_fft))
register_backend(Backend("cpu", functools.partial(_compiled_reason, device_type="cpu"), hco_compiled))
register_backend(Backend("triton", _triton_reason, _triton_hco))
register_backend(Backend("cuda", _cuda_reason, hco_compiled))
