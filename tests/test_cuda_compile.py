"""Compile-time checks of the CUDA kernels without a GPU (benchmarks/cuda_resources.py).

The slow test compiles csrc/cuda/hco_cuda_kernels.cu with nvcc for sm_80 and sm_90 and
``-Xptxas -v`` (about a minute on two cores), prints the per-kernel table and fails on any
spill, more than 128 registers or static shared memory above 48 KiB. The fast tests check
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
    "cuda_resources", Path(__file__).resolve().parents[1] / "benchmarks" / "cuda_resources.py"
)
res = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = res  # dataclasses look their module up
_spec.loader.exec_module(res)

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


@pytest.mark.slow
@pytest.mark.skipif(res.find_nvcc() is None, reason="needs nvcc (CUDA toolkit)")
def test_nvcc_sm80_sm90_no_spills_and_smem_within_limits():
    rows = res.parse_ptxas(res.compile_ptxas_log(res.ARCHS))
    print("\n" + res.kernel_table(rows))
    assert {r.arch for r in rows} == set(res.ARCHS)
    kernels = {r.kernel.split("<")[0] for r in rows}
    assert {"hco_fused_forward_kernel", "hco_fused_grad_E_kernel", "hco_line_kernel"} <= kernels, kernels
    bad = [f"sm_{r.arch} {r.kernel}: {'; '.join(r.problems())}" for r in rows if r.problems()]
    assert not bad, "kernels over budget:\n" + "\n".join(bad)


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
    by_key = {(r.arch, r.shape, r.acc_bytes, r.op): r for r in rows}
    for arch in res.ARCHS:
        for shape in res.PLAN_SHAPES[:4]:  # vHeat stages at 224 px run fused in fp32
            for op in ("forward", "grad_E"):
                assert by_key[(arch, shape, 4, op)].path == "fused", (arch, shape, op)
        assert by_key[(arch, (2, 200, 304, 96), 4, "forward")].path.startswith("lines")


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
