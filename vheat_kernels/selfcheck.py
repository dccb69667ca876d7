"""Correctness self-check: every backend that can run here vs scipy's DCT (float64) on
fresh random inputs of awkward shapes, forward and gradients. Exit code 1 on a mismatch.

    python -m vheat_kernels.selfcheck
"""
from __future__ import annotations

import sys

import numpy as np
import scipy.fft as sf
import torch

import vheat_kernels as vk
from vheat_kernels.stages import stage_shapes

SHAPES = [(2, 7, 5, 3), (1, 13, 11, 17), (3, 1, 9, 5), stage_shapes("T", 224, 2)[0], (1, 31, 29, 40)]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-6, torch.bfloat16: 2e-2}


def _dct2(a):
    return sf.dctn(a, type=2, axes=(1, 2), norm="ortho")


def _idct2(a):
    return sf.idctn(a, type=2, axes=(1, 2), norm="ortho")


def check(backend: str, shape, dtype) -> float:
    """Largest error relative to max|oracle| over y, dx and dE."""
    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(True)
    E = torch.rand(shape[1:], dtype=torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(True)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    vk.heat_conduction(x, E, backend=backend).backward(dy)
    y = vk.heat_conduction(x, E, backend=backend)
    xn, en, gn = (t.detach().double().numpy() for t in (x, E, dy))
    expected = {
        "y": _idct2(_dct2(xn) * en[None]),
        "dx": _idct2(_dct2(gn) * en[None]),
        "dE": (_dct2(xn) * _dct2(gn)).sum(0),
    }
    got = {"y": y, "dx": x.grad, "dE": E.grad}
    return max(
        float(np.abs(got[k].detach().double().numpy() - v).max() / max(np.abs(v).max(), 1e-30))
        for k, v in expected.items()
    )


def main() -> int:
    probe = (torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2))
    backends = vk.available_backends(*probe)
    print(f"vheat_kernels self-check; backends available here: {', '.join(backends)}; build: {vk.build_info()}")
    failures = 0
    for backend in backends:
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            # The official formulation computes in the input dtype: bf16 there is not fp32-accumulated.
            tol = TOLERANCE[dtype] * (4 if backend == "reference" and dtype == torch.bfloat16 else 1)
            worst = max(check(backend, shape, dtype) for shape in SHAPES)
            ok = worst <= tol
            failures += not ok
            print(f"  {backend:9s} {str(dtype).replace('torch.', ''):8s} max rel. error {worst:.2e} "
                  f"(tolerance {tol:.0e}) {'ok' if ok else 'FAIL'}")
    print("self-check passed" if not failures else f"self-check FAILED ({failures} mismatches)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
