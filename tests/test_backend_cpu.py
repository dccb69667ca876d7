"""The 'cpu' backend's own paths (csrc/cpu): determinism across thread counts, the
small-plane run sweep, the FFT path for long odd / prime sides, and bounded memory (table
cache, workspace, prime sides). ISA builds: test_backend_cpu_isa.py; the heap: test_backend_cpu_heap.py."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hco_oracle import assert_matches_scipy, dct2, hco_grad_oracle, random_inputs
from vheat_kernels import heat_conduction
from vheat_kernels.testing import assert_close


# A general plane, and the run-sweep planes (7, 14, 28, 56: vHeat's stages) cut into several
# runs of channel blocks with a partial block at the end (csrc/cpu/hco_cpu.cpp, small_runs).
@pytest.mark.parametrize("shape", [(5, 12, 10, 40), (3, 7, 7, 16 * 70 + 5), (3, 14, 14, 16 * 17 + 9),
                                   (2, 28, 28, 16 * 7 + 3), (2, 56, 56, 16 * 2 + 11)], ids=str)
def test_cpu_backward_is_deterministic_across_thread_counts(shape):
    x, E = random_inputs(shape, torch.float32, requires_grad=True)
    dy = torch.randn_like(x)
    grads = []
    old = torch.get_num_threads()
    try:
        for threads in (1, old):
            torch.set_num_threads(threads)
            x.grad = E.grad = None
            heat_conduction(x, E, backend="cpu").backward(dy)
            grads.append((x.grad.clone(), E.grad.clone()))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 7, 16 * 70 + 5), (2, 14, 14, 16 * 17 + 9), (1, 7, 7, 16),
                                   (2, 28, 28, 16 * 7 + 3), (2, 56, 56, 16 * 2 + 11)], ids=str)
def test_cpu_small_plane_runs_match_scipy(shape, dtype):
    # Small planes take the run sweep: more channel blocks than one run holds, a partial
    # block, and the saved-spectrum backward, against the float64 oracle.
    x, E = random_inputs(shape, dtype, requires_grad=True)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    assert_matches_scipy("cpu", x, E, dy)
    # The plain backward (x itself, transformed inside the run), as the second order uses it.
    dx, dE = hco_grad_oracle(x, E, dy)
    dx_plain, dE_plain = torch.ops.vheat.hco_backward(dy, x.detach(), E.detach(), True, True)
    assert_close(dx_plain, dx, "cpu", dtype, "dx", what=f"plain dx {shape}")
    assert_close(dE_plain, dE, "cpu", dtype, "dE", what=f"plain dE {shape}")


# Sides whose dense DCT block would exceed kDenseBlockMax = 384 (csrc/cpu/hco_cpu.cpp):
# primes 797 and 787, 2 x 773; plus the largest odd side still on the dense path (767).
FFT_PATH_SHAPES = [(2, 1, 797, 3), (1, 787, 3, 2), (2, 2, 1546, 3), (1, 3, 767, 17)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", FFT_PATH_SHAPES, ids=str)
def test_cpu_long_odd_sides_match_scipy(shape, dtype):
    x, E = random_inputs(shape, dtype, requires_grad=True)
    E32 = E if dtype == torch.float64 else E.detach().float().requires_grad_(True)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    assert_matches_scipy("cpu", x, E32, dy)
    if dtype != torch.float64:
        spectrum = torch.ops.vheat.hco_forward_spectrum(x.detach(), E32.detach())[1]
        want = torch.from_numpy(dct2(x.detach().double().numpy()))
        assert_close(spectrum, want, "cpu", torch.float32, what="spectrum")


def test_cpu_fft_path_gradgradcheck():
    x, E = random_inputs((1, 1, 797, 2), torch.float64, requires_grad=True)
    fn = lambda a, b: heat_conduction(a, b, backend="cpu")
    assert torch.autograd.gradgradcheck(fn, (x, E), fast_mode=True)


def _measure_in_subprocess(body: str) -> float:
    """Run `body` in a fresh interpreter after warm-up; return the number it prints (MB)."""
    script = textwrap.dedent("""
        import resource, torch, vheat_kernels as vk
        def run(shape):
            x = torch.randn(shape, requires_grad=True)
            E = torch.rand(shape[1:], requires_grad=True)
            vk.heat_conduction(x, E, backend="cpu").backward(torch.randn(shape))
        def peak_growth_mb():
            return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        def resident_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20
        torch.set_num_threads(1)
        run((1, 1, 1009, 2)); run((2, 9, 9, 20))  # load the FFT and kernel code paths first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    """) + textwrap.dedent(body)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.split()[-1])


# Library overhead measured here: MKL's plan and Bluestein buffers for a 10^5 prime add
# about 60 MB to the first call of any backend (torch.fft too). O(N^2) tables would need
# 40 GB for 99991 and 1.6 GB for 20011.
LIBRARY_MB = 96


@pytest.mark.parametrize("shape", [(1, 1, 99991, 1), (1, 20011, 1, 1), (1, 1, 1, 20011), (2, 1, 20011, 16)], ids=str)
def test_cpu_prime_sides_run_in_bounded_memory(shape):
    input_mb = torch.Size(shape).numel() * 4 / 2**20
    growth = _measure_in_subprocess(f"run({shape!r}); print(peak_growth_mb())")
    assert growth <= 16 * input_mb + LIBRARY_MB, f"{shape}: peak RSS grew {growth:.1f} MB for a {input_mb:.2f} MB input"


def test_cpu_table_cache_is_bounded():
    # 84 odd sides on the dense path, each with about 2 MB of tables: an unbounded cache
    # holds about 180 MB, the LRU at most 32 MB (kCachedTableBytes).
    growth = _measure_in_subprocess("""
        for n in range(601, 769, 2):
            vk.heat_conduction(torch.randn(1, 1, n, 16), torch.rand(1, n, 16), backend="cpu")
        print(peak_growth_mb())
    """)
    assert growth <= 96, f"peak RSS grew {growth:.1f} MB over 84 distinct sides"


def test_cpu_large_plane_workspace_is_released():
    # A 2048 x 2048 plane of 16 channels needs 268 MB of per-thread workspace; above
    # kKeptWorkspace (16 MB) it is freed when the call ends. Current (not peak) RSS.
    held = _measure_in_subprocess("""
        x, E = torch.randn(1, 2048, 2048, 16), torch.rand(2048, 2048, 16)
        before = resident_mb()
        with torch.no_grad():
            vk.heat_conduction(x, E, backend="cpu")  # y (256 MB) is dropped at once
        print(resident_mb() - before)
    """)
    assert held <= 64, f"{held:.1f} MB still resident after the call"
