"""The HCO op, top to bottom: schema, fakes, autograd, and the compiled backends' call.

Schema (csrc/ops.cpp, ``TORCH_LIBRARY(vheat)``), with ``spectrum = DCT2(x)`` over H and W:

    hco_forward(x, E) -> y                              y = IDCT2(DCT2(x) * E)
    hco_backward(grad_y, x, E, need_dx, need_dE) -> (dx, dE)
    hco_forward_spectrum(x, E) -> (y, spectrum)          spectrum in fp32 (fp64 for double)
    hco_backward_spectrum(grad_y, spectrum, E, need_dx, need_dE) -> (dx, dE)

The device kernels register themselves next to their code (csrc/cpu, csrc/cuda). The
spectrum pair lets a CPU training step save ``spectrum`` instead of ``x``, so its backward
does two plane transforms instead of three. The Triton backend declares its own pair
(``vheat::hco_triton`` / ``hco_triton_backward``, torch.library.triton_op in
triton/hco.py) and registers the same autograd with :func:`register_hco_autograd`.

Fakes keep ``torch.compile(fullgraph=True)`` and ``torch.export`` tracing through the ops
and make ``torch.library.opcheck`` pass. Everything registers when this module is imported
(once, by ``import vheat_kernels``); without the op library only the Triton pair exists.

Autograd, the same pair for every backend:

    dx = HCO(grad_y, E)                 dE = sum_b spectrum * DCT2(grad_y)

The backward is linear in grad_y and bilinear in (x, grad_y), so its own gradient, for
incoming (g_dx, g_dE), is made of the same two ops; every op is called through its
registered autograd, so third and higher orders follow:

    d grad_y = HCO(g_dx, E) + HCO(x, g_dE)
    d x      = HCO(grad_y, g_dE)
    d E      = backward(g_dx, grad_y, E)[dE]

``x`` (and the saved ``grad_y``) reach the ops as they are, strided views included: the
kernels read a channels-last tensor whose channels are adjacent at any other strides, so
nothing here copies the feature map. Incoming gradients are made contiguous (no copy when
they already are; an expanded one from a ``.sum()`` has zero strides).

Autograd is registered from Python (torch.library.register_autograd). Its fixed cost per
call is larger than a C++ autograd::Function's (tens of microseconds), and it is below 2% of
a vHeat-T training step on CPU at batch 1 and 16 (measured side by side in one process;
see CHANGELOG.md), so one Python pair serves every backend.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._extension import extension_available, require_extension
from .dct import compute_dtype
from .reference import dct2_2d, idct2_2d

# --- fakes ---------------------------------------------------------------------------------


def _hco_forward_fake(x, E):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _hco_forward_spectrum_fake(x, E):
    spectrum = torch.empty_like(x, dtype=compute_dtype(x.dtype), memory_format=torch.contiguous_format)
    return _hco_forward_fake(x, E), spectrum


def _hco_backward_fake(grad_y, saved, E, need_dx, need_dE):
    # Shared by hco_backward (saved = x) and hco_backward_spectrum (saved = spectrum).
    dx = torch.empty_like(grad_y, memory_format=torch.contiguous_format) if need_dx else grad_y.new_empty(0)
    dE = torch.empty_like(E, memory_format=torch.contiguous_format) if need_dE else E.new_empty(0)
    return dx, dE


# --- autograd ------------------------------------------------------------------------------


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def _op(op):
    # torch.ops.ns.name is an overload packet; autograd is registered on its one overload.
    return getattr(op, "default", op)


def _forward_autograd(backward_op: Callable):
    """setup_context / backward of a forward op ``(x, E) -> y``, or ``-> (y, spectrum)`` for
    a spectrum forward, which saves the spectrum instead of x. ``backward_op`` takes what
    was saved."""

    def setup_context(ctx, inputs, output):
        x, E = inputs
        ctx.set_materialize_grads(False)
        if isinstance(output, tuple):
            ctx.x_dtype = x.dtype
            ctx.save_for_backward(output[1], E)
        else:
            ctx.save_for_backward(x, E)

    def backward(ctx, grad_y, grad_spectrum=None):
        saved, E = ctx.saved_tensors
        need_dx, need_dE = ctx.needs_input_grad
        dx = dE = None
        if grad_y is not None and (need_dx or need_dE):
            dx, dE = backward_op(grad_y.contiguous(), saved, E, need_dx, need_dE)
            dx, dE = (dx if need_dx else None), (dE if need_dE else None)
        if grad_spectrum is not None and need_dx:  # only a second-order pass differentiates the spectrum
            dx = _add(dx, idct2_2d(grad_spectrum).to(ctx.x_dtype))
        return dx, dE

    return setup_context, backward


def _backward_autograd(forward_op: Callable, backward_op: Callable, saves_spectrum: bool):
    """setup_context / backward of a backward op ``(grad_y, saved, E, need_dx, need_dE)``,
    whose ``saved`` is x, or the spectrum (``saves_spectrum``). Its gradients are made of
    the plain pair ``forward_op`` / ``backward_op``."""

    def setup_context(ctx, inputs, output):
        grad_y, saved, E, need_dx, need_dE = inputs
        ctx.set_materialize_grads(False)
        ctx.flags = (need_dx, need_dE)
        ctx.save_for_backward(grad_y, saved, E)

    def backward(ctx, g_dx, g_dE):
        grad_y, saved, E = ctx.saved_tensors
        need_dx, need_dE = ctx.flags
        want_gy, want_saved, want_E = ctx.needs_input_grad[:3]
        # An unneeded output is an empty tensor: its incoming gradient carries nothing.
        has_dx, has_dE = need_dx and g_dx is not None, need_dE and g_dE is not None
        d_gy = d_saved = d_E = None
        if want_gy and has_dx:
            d_gy = forward_op(g_dx.contiguous(), E)
        if want_gy and has_dE:
            if saves_spectrum:  # HCO(x, g_dE) = IDCT2(spectrum * g_dE)
                d_gy = _add(d_gy, idct2_2d(saved * g_dE).to(grad_y.dtype))
            else:
                d_gy = _add(d_gy, forward_op(saved, g_dE))
        if want_saved and has_dE:
            if saves_spectrum:  # d spectrum = DCT2(grad_y) * g_dE, mapped to x by the forward's IDCT2
                d_saved = (dct2_2d(grad_y.to(saved.dtype)) * g_dE).to(saved.dtype)
            else:
                d_saved = forward_op(grad_y, g_dE)
        if want_E and has_dx:
            d_E = backward_op(g_dx.contiguous(), grad_y, E, False, True)[1]
        return d_gy, d_saved, d_E, None, None

    return setup_context, backward


def _register_autograd(op, setup_and_backward, lib) -> None:
    setup_context, backward = setup_and_backward
    torch.library.register_autograd(_op(op), backward, setup_context=setup_context, lib=lib)


def register_hco_autograd(
    forward_op: Callable,
    backward_op: Callable,
    *,
    forward_spectrum_op: Optional[Callable] = None,
    backward_spectrum_op: Optional[Callable] = None,
    lib: Optional[torch.library.Library] = None,
) -> None:
    """Autograd, all orders, of an op pair ``forward(x, E) -> y`` / ``backward(grad_y, x,
    E, need_dx, need_dE) -> (dx, dE)`` (an unneeded gradient is an empty tensor), and of
    its spectrum pair when there is one. ``lib``: the Library to register into (default:
    torch.library's own, for the process)."""
    _register_autograd(forward_op, _forward_autograd(backward_op), lib)
    _register_autograd(backward_op, _backward_autograd(forward_op, backward_op, False), lib)
    if forward_spectrum_op is not None:
        _register_autograd(forward_spectrum_op, _forward_autograd(backward_spectrum_op), lib)
        _register_autograd(backward_spectrum_op, _backward_autograd(forward_op, backward_op, True), lib)


# --- registration of the compiled ops ------------------------------------------------------


def _register_compiled_ops() -> None:
    torch.library.register_fake("vheat::hco_forward", _hco_forward_fake)
    torch.library.register_fake("vheat::hco_backward", _hco_backward_fake)
    torch.library.register_fake("vheat::hco_forward_spectrum", _hco_forward_spectrum_fake)
    torch.library.register_fake("vheat::hco_backward_spectrum", _hco_backward_fake)
    ops = torch.ops.vheat
    register_hco_autograd(ops.hco_forward, ops.hco_backward, forward_spectrum_op=ops.hco_forward_spectrum,
                          backward_spectrum_op=ops.hco_backward_spectrum)


if extension_available():
    _register_compiled_ops()


# --- the compiled backends' call ('cpu' and 'cuda') ----------------------------------------


def compiled_ops():
    """``torch.ops.vheat`` with the compiled ops; raises (saying how to build) without them."""
    require_extension()
    return torch.ops.vheat


def hco_compiled(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """HCO through the compiled op of x's device. On CPU, when a backward will follow, the
    spectrum forward keeps DCT2(x) for it (saved instead of x)."""
    # Few Python steps on purpose: with cold caches each costs microseconds per call.
    ops = torch.ops.vheat
    if x.is_cpu and (x.requires_grad or E.requires_grad) and torch.is_grad_enabled():
        return ops.hco_forward_spectrum(x, E)[0]
    return ops.hco_forward(x, E)
