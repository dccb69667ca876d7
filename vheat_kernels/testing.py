"""Checking an HCO backend against float64 (like ``torch.testing``, importable at run time).

One place for: the float64 oracle (torch only: explicit float64 cosine matrices), the
relative error every check measures, the tolerance per (backend, dtype, quantity), and
:func:`assert_matches_oracle`, the forward-and-gradients check that the self-check
(``python -m vheat_kernels.selfcheck``), the tests and scripts/gpu_check.py run. The tests
add an independent oracle (scipy.fft, tests/hco_oracle.py) through ``oracle=``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .dct import dct_matrix

QUANTITIES = ("y", "dx", "dE")

# Largest max |error| / max |float64 oracle| per backend and input dtype, for inputs already
# rounded to the dtype (so it measures the backend's own rounding).
# cpu, fft and cuda accumulate in fp32 (fp64 for fp64 inputs) and round the output once.
_FP32_ACCUMULATED = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
# reference is the official formulation: it computes in the input dtype, fp32 accumulation
# or not, so 16-bit inputs lose a few more bits.
_IN_DTYPE = {**_FP32_ACCUMULATED, torch.bfloat16: 6e-2, torch.float16: 6e-3}
# triton: fp32 dots run as tf32x3 (hi / lo tf32 split; the CPU interpreter emulates it);
# 16-bit dots round every operand, as the reference does.
_TF32X3 = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
_BY_BACKEND = {"cpu": _FP32_ACCUMULATED, "fft": _FP32_ACCUMULATED, "cuda": _FP32_ACCUMULATED,
               "reference": _IN_DTYPE, "triton": _TF32X3}


def _tolerance(backend: str, dtype: torch.dtype, quantity: str) -> float:
    tol = _BY_BACKEND[backend][dtype]
    if backend == "triton" and quantity == "dE":
        # dE sums over the batch the products of two rounded transforms, reduced in chunks.
        return 2 * max(tol, 1e-6)
    return tol


TOLERANCE = {
    (backend, dtype, quantity): _tolerance(backend, dtype, quantity)
    for backend, table in _BY_BACKEND.items()
    for dtype in table
    for quantity in QUANTITIES
}


# A backend against the official formulation (``reference``) at vHeat's full sizes on a GPU
# (scripts/gpu_check.py): both sides round, and dE sums 128 images, so the bound is the
# looser of the two backends' plus headroom for the batch reduction.
AGAINST_REFERENCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def tolerance(backend: str, dtype: torch.dtype, quantity: str = "y") -> float:
    """Largest accepted :func:`relative_error` of ``quantity`` ('y', 'dx' or 'dE') computed
    by ``backend`` from inputs of ``dtype``."""
    try:
        return TOLERANCE[(backend, dtype, quantity)]
    except KeyError:
        raise KeyError(f"no tolerance for backend {backend!r}, {dtype}, {quantity!r}") from None


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| in float64 (0 for empty tensors), on ``want``'s device
    (``got`` is moved there: a GPU result against a CPU oracle)."""
    want = torch.as_tensor(want).detach().double()
    got = torch.as_tensor(got).detach().to(device=want.device, dtype=torch.float64)
    if want.numel() == 0:
        return 0.0
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)


# --- the float64 oracle ----------------------------------------------------------------------


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II over H and W of (B, H, W, C), float64 on the CPU, as matrix products."""
    x = x.detach().double().cpu()
    c_h, c_w = dct_matrix(x.shape[1], "cpu", torch.float64), dct_matrix(x.shape[2], "cpu", torch.float64)
    return torch.einsum("kh,bhwc,lw->bklc", c_h, x, c_w)


def idct2(spectrum: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal DCT-III over H and W), float64 on the CPU."""
    s = spectrum.detach().double().cpu()
    c_h, c_w = dct_matrix(s.shape[1], "cpu", torch.float64), dct_matrix(s.shape[2], "cpu", torch.float64)
    return torch.einsum("kh,bklc,lw->bhwc", c_h, s, c_w)


def hco_oracle(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """IDCT2(DCT2(x) * E) in float64 on the CPU."""
    return idct2(dct2(x) * E.detach().double().cpu()[None])


def hco_grad_oracle(x: torch.Tensor, E: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dE) in float64: dx = HCO(dy, E), dE = sum_b DCT2(x) * DCT2(dy)."""
    return hco_oracle(dy, E), (dct2(x) * dct2(dy)).sum(0)


# --- the check ---------------------------------------------------------------------------------


def errors_against_oracle(
    backend: str,
    x: torch.Tensor,
    E: torch.Tensor,
    dy: torch.Tensor,
    *,
    oracle: Callable = hco_oracle,
    grad_oracle: Callable = hco_grad_oracle,
) -> dict[str, float]:
    """{'y', 'dx', 'dE': relative error} of heat_conduction on ``backend`` and its gradients
    for ``dy`` (x and E: leaf tensors that require grad; their .grad is written)."""
    from .functional import heat_conduction

    y = heat_conduction(x, E, backend=backend)
    y.backward(dy)
    dx, dE = grad_oracle(x, E, dy)
    return {"y": relative_error(y, oracle(x, E)), "dx": relative_error(x.grad, dx),
            "dE": relative_error(E.grad, dE)}


def assert_matches_oracle(backend: str, x: torch.Tensor, E: torch.Tensor, dy: torch.Tensor,
                          **oracles: Callable) -> dict[str, float]:
    """Forward and gradients of ``backend`` within :func:`tolerance` of the float64 oracle
    (or the ``oracle`` / ``grad_oracle`` given); returns the errors."""
    errors = errors_against_oracle(backend, x, E, dy, **oracles)
    for quantity, err in errors.items():
        tol = tolerance(backend, x.dtype, quantity)
        assert err <= tol, (f"{backend} {quantity} {tuple(x.shape)} {x.dtype}: relative error {err:.3e} "
                            f"> {tol:.1e}")
    return errors


def assert_close(got: torch.Tensor, want: torch.Tensor, backend: str, dtype: torch.dtype, quantity: str = "y",
                 what: str = "") -> None:
    """``relative_error(got, want) <= tolerance(backend, dtype, quantity)``."""
    err, tol = relative_error(got, want), tolerance(backend, dtype, quantity)
    assert err <= tol, f"{what or quantity}: relative error {err:.3e} > {tol:.1e} ({backend}, {dtype})"
