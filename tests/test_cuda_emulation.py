"""The CUDA kernels run on the host block emulator (csrc/cuda/device_compat.cuh): one
std::thread per CUDA thread, std::barrier for __syncthreads, shared memory pre-filled with
NaN bytes. tests/cpp/test_cuda_emulated.cpp drives the same launch sequences as the CUDA
op (csrc/cuda/hco_launch.cuh) on fused and line paths, float and double, awkward shapes,
against a naive float64 HCO. Needs only g++ (C++20), no GPU and no libtorch."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_cuda_kernels_on_block_emulator(tmp_path):
    exe = tmp_path / "test_cuda_emulated"
    subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tests" / "cpp" / "test_cuda_emulated.cpp"), "-o", str(exe)], check=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "all emulated CUDA kernel checks passed" in proc.stdout
    assert proc.stdout.count("\nok ") >= 20
