"""The GPU acceptance run (scripts/gpu_check.sh, scripts/gpu_check.py) and bench_gpu.py,
as far as a machine without a GPU can check them: the clean "no GPU" exit (nothing
written), every step of the same script in its dry run (CPU tensors, tiny shapes, no
network, no fvcore), the prebuilt op library's checks, the 4-matmul peer and the copy bandwidth."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hco_oracle import hco_oracle
from vheat_kernels.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402
from benchmarks import bench_gpu  # noqa: E402
from vheat_kernels.reference import hco_matmul4  # noqa: E402

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
    assert_close(hco_matmul4(x, E), hco_oracle(x, E), "reference", torch.float64)


def test_four_matmul_peer_gradcheck():
    x = torch.randn((2, 3, 4, 2), dtype=torch.float64, requires_grad=True)
    E = torch.rand((3, 4, 2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hco_matmul4, (x, E))


def test_copy_bandwidth_counts_read_and_write_of_the_copy_it_times():
    copied = []

    def one_ms(fn):
        copied.append(fn())
        return 1.0

    nbytes = 1 << 20
    assert bench_gpu.copy_bandwidth_gbs(nbytes, "cpu", one_ms) == pytest.approx(2 * nbytes / 1e-3 / 1e9)
    assert copied[0].numel() * copied[0].element_size() == nbytes and copied[0].abs().sum() > 0


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


def _no_fvcore(tmp_path) -> str:
    """A folder whose fvcore package fails to import, as on the GPU machine's Python."""
    stub = tmp_path / "no_fvcore" / "fvcore"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('fvcore is not installed on the GPU machine')\n")
    return str(stub.parent)


def test_gpu_check_dry_run_runs_every_step_offline(tmp_path):
    """`GPU_CHECK_DRY_RUN=1 make gpu-check`'s script: every step on CPU tensors, pip unable to
    reach an index, fvcore missing; results appended per case, tables written."""
    import json

    out = tmp_path / "results"
    env = dict(os.environ, GPU_CHECK_DRY_RUN="1", GPU_CHECK_OUT=str(out), PIP_NO_INDEX="1", PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(filter(None, [_no_fvcore(tmp_path), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "gpu-check: PASS" in proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and [s["step"] for s in report["steps"]] == list(gpu_check.STEPS)
    rows = report["results"]
    steps = {r["step"] for r in rows}
    assert steps == set(gpu_check.STEPS), steps
    checked = [r for r in rows if r["step"] == "correctness" and "ok" in r]
    # triton (interpreted) on both tiny planes, both dtypes, first and second call
    assert len(checked) == 2 * 2 * 2 and all(r["ok"] for r in checked), checked
    assert {r["backend"] for r in rows if r["step"] == "correctness" and "skipped" in r} == {"cuda"}
    train = [r for r in rows if r["step"] == "train" and "ok" in r]
    assert [r["backend"] for r in train] == ["cpu"] and train[0]["ok"] and train[0]["params"] > 20
    timed = {r["candidate"] for r in rows if r["step"] == "timing" and "ms" in r}
    assert {"triton", "4-matmul", "HBM floor"} <= timed
    model = {(r["run"], r["mode"]) for r in rows if r["step"] == "model" and "images_per_s" in r}
    assert {("cpu", "train bf16"), ("cpu", "infer fp32"), ("official", "infer fp32")} <= model
    tuned = json.loads((out / "tuned_configs.json").read_text())
    assert tuned and all(k.startswith("hco_") for k in tuned)
    md = (out / "gpu_check.md").read_text()
    assert "| correctness | PASS |" in md and "## HCO timing" in md and "## vHeat-T" in md
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)


def test_read_results_skips_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"step": "correctness", "ok": true}\n{"step": "timing", "ms": 1.')
    assert gpu_check.read_results(path) == [{"step": "correctness", "ok": True}]


def test_run_step_records_failures_and_timeouts(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "__file__", str(tmp_path / "fake_check.py"))
    (tmp_path / "fake_check.py").write_text(
        "import sys, time\nname = sys.argv[sys.argv.index('--step') + 1]\n"
        "if name == 'train': sys.exit(1)\nif name == 'timing': time.sleep(30)\nprint('ran', name)\n")
    ok = gpu_check.run_step("correctness", tmp_path, 30, dry_run=True)
    assert ok["status"] == "PASS" and (tmp_path / "correctness.log").read_text() == "ran correctness\n"
    bad = gpu_check.run_step("train", tmp_path, 30, dry_run=True)
    assert bad["status"] == "FAIL" and bad["why"].startswith("exit code 1")
    slow = gpu_check.run_step("timing", tmp_path, 1, dry_run=True)
    assert slow["status"] == "FAIL" and slow["why"] == "timed out after 1 s" and slow["seconds"] < 10


def test_prebuilt_op_library_is_refused_unless_it_matches(tmp_path):
    """gpu_check.sh installs build/gpu_check_artifact only for this torch, Python and
    sources, with the file's sha256 as recorded; otherwise it builds."""
    import json

    import gpu_check_artifact as artifact

    assert artifact.install(tmp_path) == 1  # nothing there
    so = tmp_path / "_C.fake.so"
    so.write_bytes(b"not a library")
    manifest = dict(artifact._runtime(), file=so.name, arch_list="9.0", bytes=so.stat().st_size,
                    sha256=artifact._sha256(so))
    for key, wrong in (("torch", "2.0.0"), ("soabi", "cpython-39"), ("sources", "0" * 64), ("sha256", "f" * 64)):
        (tmp_path / "manifest.json").write_text(json.dumps({**manifest, key: wrong}))
        assert artifact.install(tmp_path) == 1, key
    target = ROOT / "vheat_kernels" / so.name
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    try:
        assert artifact.install(tmp_path) == 0
        assert target.read_bytes() == b"not a library"
    finally:
        target.unlink(missing_ok=True)


def test_a_step_out_of_time_stops_with_what_it_has(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # what the dry-run context sets; restored after
    threads = torch.get_num_threads()
    try:
        ctx = gpu_check.Context(tmp_path, dry_run=True, deadline=0.0)
        assert gpu_check.step_timing(ctx)
    finally:
        torch.set_num_threads(threads)
    rows = gpu_check.read_results(tmp_path / "results.jsonl")
    assert [r.get("case") for r in rows[:1]] == ["copy bandwidth"]
    assert "incomplete" in rows[-1] and not any("candidate" in r for r in rows)
    md = gpu_check.summary_markdown(dict(device="mock", torch="x", steps=[
        dict(step="timing", status="PASS", seconds=1.0)], results=rows))
    assert "| timing | PASS | 1.0 | incomplete: out of time |" in md
