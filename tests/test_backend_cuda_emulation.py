"""The CUDA kernels run on the host block emulator (csrc/cuda/device_compat.cuh): one
std::thread per CUDA thread, std::barrier for __syncthreads, shared memory pre-filled with
NaN bytes, and mma.sync rebuilt from the 32 lanes' fragments in PTX's layout.
tests/cpp/test_cuda_emulated.cpp drives the same launch sequences as the CUDA op
(csrc/cuda/hco_launch.cuh) on fused (tensor-core for fp32, bf16 and fp16) and line paths,
fp32, bf16, fp16 and fp64, contiguous input and Heat2D's chunk view (strides
(H*W*2C, W*2C, 2C, 1)), awkward shapes (odd, prime, H != W, 1-wide, B = 0) and the
vHeat-size plans, forward, dx and dE, against a naive float64 HCO. A third mode counts
the launches of the op's kernel sequences on every classification plane.
Needs only g++ (C++20), no GPU and no libtorch."""
from __future__ import annotations

import re
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
    assert len(re.findall(r"^ok ", out, re.M)) == 100  # 10 shapes x 10 (dtype, path, layout) runs
    assert out.count("ok bf16 ") == 20 and out.count("forward bf16 chunk-view fused") == 10
    assert out.count("ok fp16 ") == 20 and out.count("forward fp16 chunk-view lines") == 10
    assert out.count("backward float chunk-view fused dx=1 dE=1") == 10
    assert "ok float (0, 5, 7, 3)" in out  # B = 0: dE = 0
    chunks = [int(n) for n in re.findall(r"fused dx=1 dE=1 chunks=(\d+)", out)]
    assert 1 in chunks and max(chunks) > 1  # dE written by the one chunk, and reduced over several


def test_classification_planes_launch_counts(emulator):
    """Forward 1 launch, backward (dx + dE) at most 2, counted from the op's kernel sequence
    (hco_launch.cuh) with sm_80 and sm_90 shared-memory limits: planes 56/28/14/7 x vHeat
    T/S/B channel counts x fp32 / bf16 / fp16 / fp64 x B in {1, 2, 3, 17, 64, 128}."""
    out = _run(emulator, "launches")
    rows = re.findall(r"launches (sm_\d+) (\w+) \((\d+), (\d+), (\d+), (\d+)\) forward (\d+) (\w+) tc=\d+ "
                      r"backward (\d+) (\w+)", out)
    assert len(rows) == 2 * 4 * 8 * 6 * 4
    assert {r[1] for r in rows} == {"float", "bf16", "fp16", "double"}
    assert {int(r[3]) for r in rows} == {56, 28, 14, 7} and {int(r[2]) for r in rows} == {1, 2, 3, 17, 64, 128}
    bad = [r for r in rows if int(r[6]) != 1 or not 1 <= int(r[8]) <= 2 or r[7] != "fused" or r[9] != "fused"]
    assert not bad, bad[:5]
    assert any(int(r[8]) == 1 for r in rows) and any(int(r[8]) == 2 for r in rows)


@pytest.mark.slow  # 24 min wall (5.4 min user CPU) on the shared 2-core machine at load ~45: ~10^6 emulated warp MMAs
def test_cuda_kernels_on_block_emulator_vheat_plans(emulator):
    out = _run(emulator, "vheat", timeout=3600)
    for plan in ("(1, 56, 56, 8)", "(2, 28, 28, 12)", "(1, 200, 334, 2)"):
        assert f"ok float {plan}" in out and f"ok bf16 {plan}" in out, plan
    assert out.count("forward float chunk-view fused") == 2 and out.count("forward bf16 chunk-view fused") == 2
    assert out.count("backward bf16 chunk-view fused dx=1 dE=1") == 2  # dx and dE in one kernel
    assert out.count("forward float contiguous lines") == 1 and out.count("forward bf16 contiguous lines") == 1
