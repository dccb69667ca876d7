"""Autograd of the HCO ops, to any order, shared by every backend with an op pair.

A backend provides ``forward(x, E) -> y`` and ``backward(grad_y, x, E, need_dx, need_dE)
-> (dx, dE)`` (an unneeded gradient is an empty tensor). The compiled ops' forward
autograd is the C++ twin of ``_forward_grad`` (csrc/autograd.cpp: no Python per call);
their backward ops' autograd, and both of the Triton pair's, are registered here. With
``X = DCT2(x)``:

    y  = IDCT2(X * E)
    dx = HCO(grad_y, E)                 dE = sum_b X * DCT2(grad_y)

The backward is linear in grad_y and bilinear in (x, grad_y), so its own gradient, for
incoming (g_dx, g_dE), is again made of the same two ops:

    d grad_y = HCO(g_dx, E) + HCO(x, g_dE)
    d x      = HCO(grad_y, g_dE)
    d E      = backward(g_dx, grad_y, E)[dE]

Every op is called through its registered autograd, so third and higher orders follow.
``x`` (and the saved ``grad_y``) reach the ops as they are, strided views included: the
kernels read a channels-last tensor whose channels are adjacent at any other strides, so
nothing here copies the feature map. Incoming gradients are made contiguous (no copy when
they already are; an expanded one from a ``.sum()`` has zero strides).
The CPU training pair saves ``X`` (fp32; fp64 for double) instead of ``x``; its second
order uses ``x = IDCT2(X)`` through torch.fft (reference.idct2_2d), differentiable back to
``x`` because ``X`` is a differentiable output of the forward (d x += IDCT2(d X), in
csrc/autograd.cpp through the op vheat::idct2_2d).
"""
from __future__ import annotations

import torch

from .reference import dct2_2d, idct2_2d


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def _given(grad, needed: bool) -> bool:
    """An incoming gradient that carries information (unneeded outputs are empty tensors)."""
    return needed and grad is not None


def _save_inputs(ctx, inputs, output):
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:2])


def _forward_grad(backward_op):
    def grad(ctx, grad_y):
        x, E = ctx.saved_tensors
        need_dx, need_dE = ctx.needs_input_grad
        if grad_y is None or not (need_dx or need_dE):
            return None, None
        dx, dE = backward_op(grad_y.contiguous(), x, E, need_dx, need_dE)
        return (dx if need_dx else None), (dE if need_dE else None)

    return grad


def _save_backward_inputs(ctx, inputs, output):
    grad_y, x, E, need_dx, need_dE = inputs
    ctx.set_materialize_grads(False)
    ctx.flags = (need_dx, need_dE)
    ctx.save_for_backward(grad_y, x, E)


def _backward_grad(forward_op, backward_op, x_is_spectrum: bool):
    """Gradient of ``backward(grad_y, x, E, need_dx, need_dE)`` w.r.t. (grad_y, x, E)."""

    def grad(ctx, g_dx, g_dE):
        grad_y, x, E = ctx.saved_tensors
        need_dx, need_dE = ctx.flags
        want_gy, want_x, want_E = ctx.needs_input_grad[:3]
        has_dx, has_dE = _given(g_dx, need_dx), _given(g_dE, need_dE)
        d_gy = d_x = d_E = None
        if want_gy and has_dx:
            d_gy = forward_op(g_dx.contiguous(), E)
        if want_gy and has_dE:
            if x_is_spectrum:  # HCO(x, g_dE) = IDCT2(X * g_dE)
                d_gy = _add(d_gy, idct2_2d(x * g_dE).to(grad_y.dtype))
            else:
                d_gy = _add(d_gy, forward_op(x, g_dE))
        if want_x and has_dE:
            if x_is_spectrum:  # d X = DCT2(grad_y) * g_dE, mapped to x by the forward's IDCT2
                d_x = (dct2_2d(grad_y.to(x.dtype)) * g_dE).to(x.dtype)
            else:
                d_x = forward_op(grad_y, g_dE)
        if want_E and has_dx:
            d_E = backward_op(g_dx.contiguous(), grad_y, E, False, True)[1]
        return d_gy, d_x, d_E, None, None

    return grad


def _register(op, grad, setup) -> None:
    # torch.ops.ns.name is an overload packet; autograd is registered on its one overload.
    torch.library.register_autograd(getattr(op, "default", op), grad, setup_context=setup)


def register_backward_autograd(op, forward_op, backward_op, x_is_spectrum: bool = False) -> None:
    """Autograd (second order and up) of the backward op ``op(grad_y, x, E, ...)``, whose x
    is the forward's input, or ``X = DCT2(x)`` saved by a spectrum forward (x_is_spectrum).
    Its gradients are made of the plain pair ``forward_op`` / ``backward_op``."""
    _register(op, _backward_grad(forward_op, backward_op, x_is_spectrum), _save_backward_inputs)


def register_hco_autograd(forward_op, backward_op) -> None:
    """Autograd (all orders) for an op pair ``forward(x, E)`` / ``backward(grad_y, x, E, ...)``."""
    _register(forward_op, _forward_grad(backward_op), _save_inputs)
    register_backward_autograd(backward_op, forward_op, backward_op)
