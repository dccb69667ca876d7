"""Independent float64 oracle for the HCO (scipy.fft) and per-dtype tolerances."""
from __future__ import annotations

import numpy as np
import scipy.fft as sf
import torch

# Shapes every backend is tested on: odd, prime, H != W, 1-wide, B = 1, and channel counts
# off every kernel's channel tiles (32/16/8/4/2); backend tests add their own.
AWKWARD_SHAPES = [
    (2, 7, 5, 3),
    (1, 13, 11, 17),
    (3, 1, 9, 5),
    (2, 6, 1, 33),
    (1, 1, 1, 1),
    (2, 14, 14, 40),
    (1, 31, 29, 7),
    (2, 3, 64, 19),
]

# Max abs error allowed relative to max |oracle| (inputs are rounded to the dtype first,
# so this measures the kernel's own rounding: fp32 accumulation, output rounding).
RTOL_OF_MAX = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
# The official formulation computes in the input dtype (no fp32 accumulation).
RTOL_OF_MAX_REFERENCE = {**RTOL_OF_MAX, torch.bfloat16: 6e-2, torch.float16: 6e-3}


def dct2(a: np.ndarray) -> np.ndarray:
    return sf.dctn(a, type=2, axes=(1, 2), norm="ortho")


def idct2(a: np.ndarray) -> np.ndarray:
    return sf.idctn(a, type=2, axes=(1, 2), norm="ortho")


def hco_oracle(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    xd = x.detach().double().cpu().numpy()
    return torch.from_numpy(idct2(dct2(xd) * E.detach().double().cpu().numpy()[None]))


def hco_grad_oracle(x: torch.Tensor, E: torch.Tensor, dy: torch.Tensor):
    """(dx, dE) in float64: dx = HCO(dy, E), dE = sum_b DCT2(x) * DCT2(dy)."""
    xd, ed, gd = (t.detach().double().cpu().numpy() for t in (x, E, dy))
    dx = idct2(dct2(gd) * ed[None])
    dE = (dct2(xd) * dct2(gd)).sum(axis=0)
    return torch.from_numpy(dx), torch.from_numpy(dE)


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, table=RTOL_OF_MAX, what=""):
    expected = expected.double()
    err = (actual.detach().double().cpu() - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-30)
    tol = table[dtype] * scale + 1e-300
    assert err <= tol, f"{what}: max abs error {err:.3e} > {tol:.3e} (= {table[dtype]:g} x max|expected| {scale:.3e}) for {dtype}"


def assert_backend_matches_oracle(x, E, dy, dtype, backend):
    """heat_conduction(x, E) on ``backend`` and its gradients for dy against the oracle
    (x, E leaf tensors that require grad); returns the oracle's (dx, dE)."""
    import vheat_kernels as vk

    y = vk.heat_conduction(x, E, backend=backend)
    shape = tuple(x.shape)
    assert_close_to(y, hco_oracle(x, E), dtype, what=f"forward {shape}")
    y.backward(dy)
    dx, dE = hco_grad_oracle(x, E, dy)
    assert_close_to(x.grad, dx, dtype, what=f"dx {shape}")
    assert_close_to(E.grad, dE, dtype, what=f"dE {shape}")
    return dx, dE
