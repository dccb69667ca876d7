"""The GPU acceptance run (scripts/gpu_check.sh, scripts/gpu_check.py) and bench_gpu.py,
as far as a machine without a GPU can check them: the clean "no GPU" exit (nothing
written), the 4-matmul peer against the oracle, and the report tables / JUnit parsing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hco_oracle import assert_close_to, hco_oracle

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402
from benchmarks import bench_gpu  # noqa: E402

no_gpu = pytest.mark.skipif(torch.cuda.is_available() or shutil.which("nvidia-smi") is not None,
                            reason="checks the machine without a GPU")


@no_gpu
def test_gpu_check_script_says_no_gpu_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, GPU_CHECK_OUT=str(out))
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gpu-check: no GPU" in proc.stdout and "nothing was checked" in proc.stdout
    assert not out.exists()


@no_gpu
def test_gpu_check_driver_and_bench_say_no_gpu(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path / "r")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "gpu-check: no GPU (torch.cuda.is_available() is False)" in proc.stdout
    assert not (tmp_path / "r").exists()
    proc = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--json", str(tmp_path / "b.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 1, 9, 2), (3, 14, 14, 8)])
def test_four_matmul_peer_matches_the_oracle(shape):
    x = torch.randn(shape, dtype=torch.float64)
    E = torch.rand(shape[1:], dtype=torch.float64)
    assert_close_to(bench_gpu.hco_four_matmul(x, E), hco_oracle(x, E), torch.float64)


def test_four_matmul_peer_gradcheck():
    x = torch.randn((2, 3, 4, 2), dtype=torch.float64, requires_grad=True)
    E = torch.rand((3, 4, 2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bench_gpu.hco_four_matmul, (x, E))


def test_bench_tables_show_failures_ratios_and_auto():
    ok = dict(backend="cuda", shape=[8, 56, 56, 96], dtype="bf16", fwd_ms=0.1, bwd_ms=0.3, rel_err=1e-3,
              fwd_gbs=900.0, bwd_gbs=800.0, fwd_copy_frac=0.3, bwd_copy_frac=0.25, accurate=True,
              total_speedup_vs_reference=4.0, **{"total_speedup_vs_4-matmul": 2.0})
    bad = dict(backend="triton", shape=[8, 56, 56, 96], dtype="bf16", error="RuntimeError: boom")
    payload = dict(device="mock", copy_gbs=3000.0, torch="x", results=[ok, bad],
                   cases=[dict(shape=[8, 56, 56, 96], dtype="bf16", auto="triton", fastest_backend="cuda",
                               skipped=[])])
    md = bench_gpu.markdown(payload)
    assert "| (8, 56, 56, 96) | bf16 | cuda | 0.100 | 30% | 0.300 | 25% | 4.00 | 2.00 | 1.0e-03 | ok |" in md
    assert "failed: RuntimeError: boom" in md and "| triton | cuda | - |" in md
    text = bench_gpu.text_table([ok, bad])
    assert "FAILED: RuntimeError: boom" in text and "4.00" in text


def test_default_bench_shapes_are_the_vheat_stage_planes():
    from benchmarks.suite.kernel import stage_shapes

    shapes = list(dict.fromkeys(s for *_, s in stage_shapes(["T/S", "B"], [224, 512], 8)))
    assert (8, 56, 56, 96) in shapes and (8, 7, 7, 1024) in shapes and (1, 128, 128, 96) in shapes
    assert len(shapes) == 16


def test_junit_summary_and_report_markdown(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                   '<testcase classname="tests.test_a" name="test_ok"/>'
                   '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
                   '<testcase classname="tests.test_a" name="test_skip"><skipped/></testcase>'
                   '</testsuite></testsuites>')
    summary = gpu_check.junit_summary(xml)
    assert summary["tests"] == 3 and summary["failures"] == 1 and summary["skipped"] == 1
    assert summary["failed_tests"] == ["tests.test_a::test_bad"]
    assert gpu_check.junit_summary(tmp_path / "missing.xml") == {}
    report = dict(device="mock", parts=[dict(part="tests", status="FAIL", seconds=3.0, why="exit code 1")],
                  model=dict(batch=16, rows=[
                      dict(backend="cuda", infer_ms=5.0, train_step_ms=20.0, loss=6.9, logits_rel_err=2e-5, ok=True),
                      dict(backend="triton", skipped="no triton", ok=True)]))
    md = gpu_check.summary_markdown(report)
    assert "| tests | FAIL | 3.0 | exit code 1 |" in md
    assert "| cuda | 5.0 | 20.0 | 2.0e-05 | ok |" in md and "| triton | no triton | | | skipped |" in md
    report["bench"] = dict(device="mock", copy_gbs=3000.0, torch="x", results=[], cases=[], complete=False)
    md = gpu_check.summary_markdown(report)
    assert "## HCO kernels on mock" in md and "incomplete" in md


def test_run_part_records_exit_codes_and_timeouts(tmp_path):
    ok = gpu_check.run_part("a", [sys.executable, "-c", "print('hi')"], 30, tmp_path)
    assert ok["status"] == "PASS" and (tmp_path / "a.log").read_text() == "hi\n"
    bad = gpu_check.run_part("b", [sys.executable, "-c", "import sys; sys.exit(3)"], 30, tmp_path)
    assert bad["status"] == "FAIL" and bad["why"] == "exit code 3"
    slow = gpu_check.run_part("c", [sys.executable, "-c", "import time; time.sleep(30)"], 1, tmp_path)
    assert slow["status"] == "FAIL" and slow["why"] == "timed out after 1 s" and slow["seconds"] < 10


@pytest.mark.slow  # ~1 min on the shared 2-core machine (a 30M-parameter model, 3 backends)
def test_model_part_runs_and_compares_backends_on_cpu(tmp_path):
    """The model part's code path on CPU backends (on the GPU it runs cuda/triton/fft/reference)."""
    import json

    path = tmp_path / "model.json"
    rc = gpu_check.model_part(str(path), device="cpu", backends=("cpu", "reference", "triton"), batch=2, res=32)
    report = json.loads(path.read_text())
    rows = {r["backend"]: r for r in report["rows"]}
    assert rc == 0, report
    assert rows["reference"]["logits_rel_err"] == 0.0 and rows["cpu"]["logits_rel_err"] < 1e-3
    assert rows["cpu"]["grads_finite"] and rows["cpu"]["train_step_ms"] > 0
    assert "skipped" in rows["triton"] and rows["triton"]["ok"]
