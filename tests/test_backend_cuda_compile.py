"""Compile-time checks of the CUDA kernels without a GPU (tools/cuda_resources.py).

The slow test compiles csrc/cuda/hco_cuda_kernels.cu with nvcc for sm_80 and sm_90 and
``-Xptxas -v`` (about a minute on two cores), prints the per-kernel table and fails on any
spill, more than 128 registers, static shared memory above 48 KiB, or a fp32 / bf16 / fp16
fused kernel whose SASS has no tensor-core MMA (HMMA) instruction. The fast tests check
the launch planner (csrc/cuda/hco_plan.h, compiled with g++) on vHeat's shapes against the
per-block dynamic shared-memory limits, and the ptxas report parser.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "cuda_resources", Path(__file__).resolve().parents[1] / "tools" / "cuda_resources.py"
)
res = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = res  # dataclasses look their module up
_spec.loader.exec_module(res)

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


@pytest.mark.slow
@pytest.mark.skipif(res.find_nvcc() is None, reason="needs nvcc (CUDA toolkit)")
def test_nvcc_sm80_sm90_no_spills_smem_within_limits_and_mma_in_fused_kernels():
    log, sass = res.compile_kernels(res.ARCHS)
    rows = res.parse_ptxas(log, res.count_sass(sass))
    print("\n" + res.kernel_table(rows))
    assert {r.arch for r in rows} == set(res.ARCHS)
    kernels = {r.kernel.split("<")[0] for r in rows}
    assert {"hco_fused_forward_kernel", "hco_fused_backward_kernel", "hco_line_kernel"} <= kernels, kernels
    bad = [f"sm_{r.arch} {r.kernel}: {'; '.join(r.problems())}" for r in rows if r.problems()]
    assert not bad, "kernels over budget:\n" + "\n".join(bad)
    fused = [r for r in rows if r.kernel.startswith("hco_fused_")]
    assert len([r for r in fused if r.needs_mma()]) == 2 * 3 * len(res.ARCHS)  # 2 kernels x fp32/bf16/fp16
    lines = [r for r in rows if r.kernel.startswith("hco_line_kernel")]
    assert all(r.mma > 0 for r in lines if r.needs_mma()) and sum(r.needs_mma() for r in lines) == 7 * len(res.ARCHS)
    assert all(r.mma > 0 for r in fused if r.needs_mma())
    assert all(r.mma == 0 and r.fma > 0 for r in fused if not r.needs_mma())  # fp64 stays on DFMA
    assert all(r.ldg128 > 0 for r in fused)  # 16-byte plane tile loads
    sixteen = [r for r in fused if r.is_16bit()]
    assert len(sixteen) == 2 * 2 * len(res.ARCHS) and all(r.ldsm > 0 for r in sixteen)  # ldmatrix A fragments


@pytest.mark.slow
@needs_gxx
def test_op_wrapper_compiles_against_torch_cuda_headers():
    """The ATen side (checks, guard, stream, registration) compiles; g++ only, ~40 s."""
    res.check_op_wrapper_compiles()


@needs_gxx
def test_launch_plans_fit_each_architecture():
    rows = res.launch_plans()
    print("\n" + res.plan_table(rows))
    bad = [f"sm_{r.arch} {r.shape} fp{8 * r.acc_bytes} {r.op}: {'; '.join(r.problems())}" for r in rows if r.problems()]
    assert not bad, "\n".join(bad)
    by_key = {(r.arch, r.shape, r.dtype_name, r.op): r for r in rows}
    for arch in res.ARCHS:
        for shape in res.PLAN_SHAPES[:4]:  # vHeat stages at 224 px run fused
            for dtype in res.DTYPES:
                for op in ("forward", "backward"):
                    assert by_key[(arch, shape, dtype, op)].path == "fused", (arch, shape, dtype, op)
                # the whole op per call: forward 1 launch, backward (dx + dE) at most 2
                assert by_key[(arch, shape, dtype, "forward")].launches == 1, (arch, shape, dtype)
                assert 1 <= by_key[(arch, shape, dtype, "backward")].launches <= 2, (arch, shape, dtype)
        # bf16 keeps one 16-bit split matrix for a square plane: at least fp32's channels per block
        for shape in res.PLAN_SHAPES[:4]:
            assert by_key[(arch, shape, "bf16", "forward")].kernel_tc >= by_key[(arch, shape, "fp32", "forward")].kernel_tc
        assert by_key[(arch, (2, 200, 304, 96), "fp32", "forward")].path.startswith("lines")


def test_parse_ptxas_and_problems():
    log = (
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 140 registers, used 1 barriers, 50000 bytes smem, 380 bytes cmem[0]\n"
        "ptxas info    : Compiling entry function '_Z1jv' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z1jv\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 64 registers, used 1 barriers, 380 bytes cmem[0]\n"
    )
    bad, good = res.parse_ptxas(log)
    assert (bad.arch, bad.registers, bad.spill_stores, bad.spill_loads, bad.static_smem) == ("90", 140, 16, 12, 50000)
    assert len(bad.problems()) == 3 and "spills" in bad.problems()[0]
    assert (good.arch, good.registers, good.problems()) == ("80", 64, [])
    with pytest.raises(RuntimeError, match="register count"):
        res.parse_ptxas("ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n")
    plan = res.LaunchPlan("80", (1, 1, 1, 1), 4, "forward", "fused", 1, 64, 164 * 1024, 1)
    assert "dynamic shared memory" in plan.problems()[0]
    slow = res.LaunchPlan("90", (8, 56, 56, 96), 4, "backward", "fused", 1, 256, 70 * 1024, 10, launches=3)
    assert slow.problems() == ["3 launches for a classification plane (at most 2)"]
    assert res.LaunchPlan("90", (8, 200, 304, 96), 4, "backward", "lines_w", 1, 256, 1024, 10, launches=9).problems() == []


SASS = """
	code for sm_90
		Function : _Z1kv
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0100*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0110*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;
        /*0120*/                   FFMA R1, R2, R3, R1 ;
        /*0130*/                   LDG.E.128.CONSTANT R8, desc[UR4][R2.64] ;
        /*0140*/                   LDSM.16.MT88.4 R12, [R3] ;
		..........
		Function : _Z1jv
        /*0100*/                   DFMA R2, R4, R6, R2 ;
"""


def test_sass_counts_mma_requirement_and_residency():
    counts = res.count_sass(SASS)
    assert counts == {("90", "_Z1kv"): {"mma": 2, "fma": 1, "ldg128": 1, "ldsm": 1},
                      ("90", "_Z1jv"): {"mma": 0, "fma": 1, "ldg128": 0, "ldsm": 0}}

    def kernel(name, mma, regs=64, ldg128=2, ldsm=2):
        return res.KernelResources("90", name, regs, 0, 0, 0, 0, mma=mma, fma=10, ldg128=ldg128, ldsm=ldsm)

    assert "ldmatrix" in kernel("hco_fused_backward_kernel<Half, float>", 4, ldsm=0).problems()[0]
    assert kernel("hco_fused_forward_kernel<float, float>", 4, ldsm=0).problems() == []  # 3xTF32: no ldmatrix
    assert "not vectorised" in kernel("hco_fused_forward_kernel<float, float>", 4, ldg128=0).problems()[0]
    assert kernel("hco_fused_forward_kernel<BFloat16, float>", 0).problems() == [
        "no tensor-core MMA (HMMA) instruction in the SASS"]
    assert kernel("hco_fused_backward_kernel<float, float>", 4).problems() == []
    assert kernel("hco_fused_forward_kernel<double, double>", 0).problems() == []  # fp64 on FMA
    assert kernel("hco_line_kernel<FMA, double, double, double>", 0).problems() == []
    assert "HMMA" in kernel("hco_line_kernel<BF16, float, float, float>", 0).problems()[0]
    # 64 registers x 256 threads = 16384 per block: 4 per SM; 128 registers: 2.
    assert kernel("k<float>", 0, 64).resident_blocks() == 4 and kernel("k<float>", 0, 128).resident_blocks() == 2
    plan = res.LaunchPlan("90", (1, 56, 56, 8), 4, "forward", "fused", 8, 256, 100 * 1024, 1)
    res.add_residency([plan], [kernel("hco_fused_forward_kernel<float, float>", 4)])
    assert plan.resident == 2  # 228 KiB / (100 + 1) KiB
