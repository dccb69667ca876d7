"""Python side of the compiled ``vheat`` ops: fake kernels and autograd.

The schema lives in csrc/ops.cpp (TORCH_LIBRARY), the device kernels in csrc/cpu and
csrc/cuda, and the forward ops' autograd in csrc/autograd.cpp (no Python per call).
Registering fake kernels and the backward ops' autograd (vheat_kernels/autograd.py,
second and higher orders) here keeps ``torch.compile(fullgraph=True)`` and
``torch.export`` tracing through the op, and makes ``torch.library.opcheck`` pass.
"""
from __future__ import annotations

import torch

from ._extension import extension_available, require_extension
from .autograd import register_backward_autograd
from .reference import idct2_2d

_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return

    @torch.library.register_fake("vheat::hco_forward")
    def _hco_forward_fake(x, E):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _backward_fake(grad_y, saved, E, need_dx, need_dE):
        # Shared by hco_backward (saved = x) and hco_backward_spectrum (saved = DCT2(x)).
        dx = torch.empty_like(grad_y, memory_format=torch.contiguous_format) if need_dx else grad_y.new_empty(0)
        dE = torch.empty_like(E, memory_format=torch.contiguous_format) if need_dE else E.new_empty(0)
        return dx, dE

    torch.library.register_fake("vheat::hco_backward", _backward_fake)
    ops = torch.ops.vheat
    register_backward_autograd(ops.hco_backward, ops.hco_forward, ops.hco_backward)

    # Training pair: the forward also returns x_hat = DCT2(x) (fp32, fp64 for double),
    # saved instead of x, so the backward does two plane transforms instead of three.
    def _spectrum_dtype(x):
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    @torch.library.register_fake("vheat::hco_forward_spectrum")
    def _hco_forward_spectrum_fake(x, E):
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        return y, torch.empty_like(x, dtype=_spectrum_dtype(x), memory_format=torch.contiguous_format)

    torch.library.register_fake("vheat::hco_backward_spectrum", _backward_fake)
    register_backward_autograd(ops.hco_backward_spectrum, ops.hco_forward, ops.hco_backward, x_is_spectrum=True)
    # The spectrum pair's second-order term (csrc/autograd.cpp), differentiable through torch.fft.
    torch.library.impl("vheat::idct2_2d", "CompositeImplicitAutograd")(idct2_2d)
    _registered = True


def compiled_ops():
    """``torch.ops.vheat`` with fakes and autograd registered; raises if the library is missing."""
    if not _registered:  # once: this runs on every HCO call
        require_extension()
        _register()
    return torch.ops.vheat


if extension_available():
    _register()
