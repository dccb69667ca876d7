"""The tests' independent float64 oracle (scipy.fft), the shapes and dtypes every backend is
tested on, and running a check under a forced CPU instruction set.

Tolerances, relative error and the forward-and-gradients check live in
vheat_kernels.testing (the self-check uses them too); these functions plug in as its
``oracle`` / ``grad_oracle``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import scipy.fft as sf
import torch

from vheat_kernels import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every dtype the op accepts.
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

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


def random_inputs(shape, dtype, requires_grad=False):
    """x (B, H, W, C) and E (H, W, C), drawn in float64 and rounded to ``dtype``."""
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    E = torch.rand(shape[1:], dtype=torch.float64).to(dtype)
    return x.requires_grad_(requires_grad), E.requires_grad_(requires_grad)


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


def oracle_dE(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """dE = sum_b DCT2(x) * DCT2(g) in float64 (hco_grad_oracle without dx)."""
    xd, gd = (t.detach().double().cpu().numpy() for t in (x, g))
    return torch.from_numpy((dct2(xd) * dct2(gd)).sum(axis=0))


def seeded_inputs(shape, dtype, e_dtype=torch.float32, seed=0):
    """(x, E) drawn from a generator seeded by ``seed`` and the shape: the same per test case."""
    gen = torch.Generator().manual_seed(seed + hash(shape) % 1000)
    B, H, W, C = shape
    x = torch.randn(shape, generator=gen).to(dtype)
    E = torch.rand((H, W, C), generator=gen).to(e_dtype)
    return x, E


def assert_matches_scipy(backend: str, x: torch.Tensor, E: torch.Tensor, dy: torch.Tensor) -> dict[str, float]:
    """vheat_kernels.testing.assert_matches_oracle against this module's scipy oracle."""
    return testing.assert_matches_oracle(backend, x, E, dy, oracle=hco_oracle, grad_oracle=hco_grad_oracle)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_supports(isa: str) -> bool:
    """Whether this CPU runs the CPU kernels' ``isa`` build ('generic', 'avx2', 'avx512')."""
    flags = _cpu_flags()
    return {"generic": True, "avx2": {"avx2", "fma"} <= flags, "avx512": "avx512f" in flags}[isa]


def run_with_cpu_isa(isa: str, code: str, seed: int = 0) -> subprocess.CompletedProcess:
    """``python -c code seed`` from the repository root with $VHEAT_CPU_ISA forced to ``isa``."""
    env = {**os.environ, "VHEAT_CPU_ISA": isa, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, str(seed)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
