"""The CUDA kernels run on the host block emulator (csrc/cuda/device_compat.cuh): one
std::thread per CUDA thread, std::barrier for __syncthreads, shared memory pre-filled with
NaN bytes, and mma.sync rebuilt from the 32 lanes' fragments in PTX's layout.
tests/cpp/test_cuda_emulated.cpp drives the same launch sequences as the CUDA op
(csrc/cuda/hco_launch.cuh) on fused (tensor-core for fp32 and bf16) and line paths, fp32,
bf16 and fp64, awkward shapes and the vHeat-size plans, against a naive float64 HCO.
Needs only g++ (C++20), no GPU and no libtorch."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    exe = tmp_path_factory.mktemp("emu") / "test_cuda_emulated"
    subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tests" / "cpp" / "test_cuda_emulated.cpp"), "-o", str(exe)], check=True)
    return exe


def _run(exe, *args, timeout=600) -> str:
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "all emulated CUDA kernel checks passed" in proc.stdout
    return proc.stdout


def test_cuda_kernels_on_block_emulator(emulator):
    out = _run(emulator)
    assert out.count("\nok ") >= 30
    assert out.count("ok bf16 ") == 14 and out.count("forward bf16 fused") == 7
    assert out.count("ok fp16 ") == 14 and out.count("forward fp16 lines") == 7


@pytest.mark.slow  # 5.6 min on the shared 2-core machine: ~10^6 emulated warp MMAs (200 x 334 lines)
def test_cuda_kernels_on_block_emulator_vheat_plans(emulator):
    out = _run(emulator, "vheat", timeout=1800)
    for plan in ("(1, 56, 56, 8)", "(2, 28, 28, 12)", "(1, 200, 334, 2)"):
        assert f"ok float {plan}" in out and f"ok bf16 {plan}" in out, plan
    assert out.count("forward float fused") == 2 and out.count("forward bf16 fused") == 2
    assert out.count("forward float lines") == 1 and out.count("forward bf16 lines") == 1
