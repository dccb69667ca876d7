"""Correctness self-check: every backend that can run here against the float64 oracle
(vheat_kernels.testing: torch only) on fresh random inputs of awkward shapes, forward and
gradients, each held to its tolerance per (backend, dtype, quantity). Exit code 1 on a
mismatch.

    python -m vheat_kernels.selfcheck
"""
from __future__ import annotations

import sys

import torch

import vheat_kernels as vk
from vheat_kernels.dct import compute_dtype
from vheat_kernels.stages import stage_shapes
from vheat_kernels.testing import errors_against_oracle, tolerance

SHAPES = [(2, 7, 5, 3), (1, 13, 11, 17), (3, 1, 9, 5), stage_shapes("T", 224, 2)[0], (1, 31, 29, 40)]
DTYPES = (torch.float64, torch.float32, torch.bfloat16)


def check(backend: str, shape, dtype) -> dict[str, float]:
    """Relative errors of y, dx and dE on ``backend`` for one random case."""
    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(True)
    E = torch.rand(shape[1:], dtype=compute_dtype(dtype)).requires_grad_(True)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    return errors_against_oracle(backend, x, E, dy)


def main() -> int:
    probe = (torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2))
    backends = vk.available_backends(*probe)
    print(f"vheat_kernels self-check; backends available here: {', '.join(backends)}; build: {vk.build_info()}")
    failures = 0
    for backend in backends:
        for dtype in DTYPES:
            # worst error / tolerance over the shapes and the three quantities
            worst, worst_what = 0.0, ""
            for shape in SHAPES:
                for quantity, err in check(backend, shape, dtype).items():
                    ratio = err / tolerance(backend, dtype, quantity)
                    if ratio >= worst:
                        worst, worst_what = ratio, f"{quantity} {shape}: {err:.2e}"
            ok = worst <= 1
            failures += not ok
            print(f"  {backend:9s} {str(dtype).replace('torch.', ''):8s} worst {worst_what} "
                  f"({worst:.2f} of its tolerance) {'ok' if ok else 'FAIL'}")
    print("self-check passed" if not failures else f"self-check FAILED ({failures} mismatches)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
