"""The bytes / roofline model of the fused GPU backends (benchmarks/bytes_model.py), counted
from the launch plans each backend runs (Triton: hco.forward_plan / backward_plan on meta
tensors; CUDA: csrc/cuda/hco_plan.h compiled into a host program by cuda_resources)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bytes_model  # noqa: E402

from vheat_kernels import dispatch  # noqa: E402

PLANES = bytes_model.classification_planes()


@pytest.mark.parametrize("dtype", list(bytes_model.ROOFLINE_DTYPES))
@pytest.mark.parametrize("label, shape", PLANES, ids=[f"{m}-{s[1]}" for m, s in PLANES])
def test_triton_is_one_pass_forward_and_two_launches_backward(label, shape, dtype):
    r = bytes_model.roofline(shape, dtype)
    assert r["fwd"].launches == 1 and r["fwd"].bytes == r["fwd"].single_pass, (r["fwd"].costs,)
    assert 1 <= r["bwd"].launches <= 2, r["bwd"].costs
    # The backward reads dy and x and writes dx once; what it adds is dE's chunk partials
    # and the plane kernels' L2 overflow: bounded well below a second pass over x.
    assert r["bwd"].bytes < 1.35 * r["bwd"].single_pass, (r["bwd"].bytes, r["bwd"].single_pass)
    for p in r.values():
        assert p.predicted_s >= p.floor_s(p.single_pass)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to compile hco_plan.h")
@pytest.mark.parametrize("dtype", list(bytes_model.ROOFLINE_DTYPES))
def test_cuda_is_one_pass_forward_and_two_launches_backward(dtype):
    for _, shape in PLANES:
        r = bytes_model.cuda_roofline(shape, dtype)
        assert r is not None, f"{shape}: the CUDA plan is not the fused kernel"
        assert r["fwd"].launches == 1 and r["fwd"].bytes == r["fwd"].single_pass
        assert 1 <= r["bwd"].launches <= 2


def test_roofline_takes_the_longer_of_memory_and_mma_time():
    gpu = bytes_model.H100
    mem_bound = bytes_model.LaunchCost("k", bytes=3_350_000_000_000, flops=1, programs=132, blocks_per_sm=1,
                                       resident_warps=8)
    assert mem_bound.predicted_s("bf16") == pytest.approx(1.0 + gpu["launch_s"])
    mma_bound = bytes_model.LaunchCost("k", bytes=1, flops=int(989e12), programs=132, blocks_per_sm=1,
                                       resident_warps=8)
    assert mma_bound.predicted_s("bf16") == pytest.approx(1.0 + gpu["launch_s"])
    # 1.5 waves of programs hold the tensor cores for two.
    tail = bytes_model.LaunchCost("k", bytes=1, flops=int(989e12), programs=198, blocks_per_sm=1, resident_warps=8)
    assert tail.predicted_s("bf16") == pytest.approx(1.0 / (198 / 264) + gpu["launch_s"])


def test_measured_times_take_backward_as_the_difference(tmp_path):
    rows = [
        '{"step": "timing", "shape": [128, 7, 7, 768], "dtype": "bf16", "pass_": "forward", "candidate": "triton", "ms": 0.01}',
        '{"step": "timing", "shape": [128, 7, 7, 768], "dtype": "bf16", "pass_": "fwd_bwd", "candidate": "triton", "ms": 0.03}',
        '{"step": "timing", "shape": [128, 7, 7, 768], "dtype": "bf16", "pass_": "forward", "candid',  # killed mid-line
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(rows) + "\n")
    got = bytes_model.measured_times(str(path))
    assert got[((128, 7, 7, 768), "bf16", "fwd", "triton")] == pytest.approx(0.01)
    assert got[((128, 7, 7, 768), "bf16", "bwd", "triton")] == pytest.approx(0.02)


def test_shipped_auto_table_is_what_the_model_writes_now():
    """vheat_kernels/auto_table.json must be regenerated (bytes_model.py --update) when a
    plan changes; the measured entries of a GPU run are the exception the file records."""
    import json

    shipped = json.loads(dispatch.AUTO_TABLE_FILE.read_text())
    entries = bytes_model.auto_entries({})
    for key, entry in entries.items():
        assert key in shipped["entries"], key
        if shipped["basis"][key]["source"] == "roofline":
            assert shipped["entries"][key] == entry["backend"], (key, shipped["basis"][key], entry)
