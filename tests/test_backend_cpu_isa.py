"""Every instruction-set build of the CPU plane kernels (generic, AVX2, AVX-512) that this
CPU can run, forced with $VHEAT_CPU_ISA in a subprocess, against the scipy oracle."""
from __future__ import annotations

import os

import pytest

from hco_oracle import cpu_supports as _supported, run_with_cpu_isa as _run
from vheat_kernels import extension_available

pytestmark = pytest.mark.skipif(not extension_available(), reason="op library not built")

CHECK = r"""
import sys, torch
sys.path.insert(0, "tests")
from hco_oracle import assert_matches_scipy
torch.manual_seed(int(sys.argv[1]))
# even lengths that recurse (16, 28, 56, 64, 30 = 2 x odd; 128 through the register trees of
# its 64 / 32 halves and quarters), odd and prime ones, 1-wide, the run-sweep planes (7, 14,
# 28, 56 square; full and partial channel blocks), the FFT path (797)
for shape in [(2, 56, 28, 20), (1, 64, 30, 16), (1, 128, 16, 20), (2, 13, 16, 35), (1, 1, 7, 3), (1, 5, 1, 17),
              (2, 7, 7, 32), (2, 14, 14, 40), (2, 28, 28, 24), (1, 56, 56, 40), (1, 2, 797, 3)]:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_(True)
        E = torch.rand(shape[1:], dtype=torch.float64).to(dtype).requires_grad_(True)
        dy = torch.randn(shape, dtype=torch.float64).to(dtype)
        assert_matches_scipy("cpu", x, E, dy)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_build_matches_scipy(isa):
    if not _supported(isa):
        pytest.skip(f"this CPU does not run {isa}")
    seed = int.from_bytes(os.urandom(4), "little")
    r = _run(isa, CHECK, seed)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), f"{isa} (seed {seed}):\n{r.stdout}\n{r.stderr[-3000:]}"


def test_unknown_isa_is_a_clear_error():
    r = _run("sse9", "import torch, vheat_kernels as vk; vk.heat_conduction(torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2), backend='cpu')")
    assert r.returncode != 0
    assert "VHEAT_CPU_ISA=sse9 is not an instruction set" in r.stderr and "accepted: generic, avx2, avx512" in r.stderr
