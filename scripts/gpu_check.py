"""GPU acceptance run (driven by scripts/gpu_check.sh, `make gpu-check`).

After the shell script has built the op library for the visible GPU, this runs each part
in its own subprocess, under a share of one overall time budget (so a hang or a crashed
CUDA context in one part cannot take the others with it), and prints PASS/FAIL per part:

  tests   every gpu-marked test (pytest -m gpu): triton and cuda, full shape x dtype matrix
  bench   benchmarks/bench_gpu.py over the vHeat-T/S/B stage shapes at 224 and 512 input
          in fp32 and bf16: every backend, the matmul-DCT and a plain 4-matmul formulation
  model   vHeat-T at 224: inference (fp32, logits vs the 'reference' backend) and one
          training step (bf16 autocast, loss and gradients finite, loss vs 'reference')
          with each backend that can run here

Everything lands in --out: gpu_check.json (all parts), gpu_check.md (tables), and the
parts' own files (gpu_tests.xml, bench_gpu.json / .md, model.json, *.log).

    python scripts/gpu_check.py --out build/gpu_check --build-status PASS --budget-s 470
    python scripts/gpu_check.py model --json model.json     # one part on its own
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Longest each part may take (seconds) within the overall budget; measured parts of an
# H100 / A100 run should fit well inside (the bench dominates: Triton autotuning).
PART_CAPS = {"tests": 170, "bench": 200, "model": 90}
MODEL_BACKENDS = ("cuda", "triton", "fft", "reference")
MODEL_BATCH = 16
LOGITS_RTOL = 1e-3  # fp32 inference vs 'reference', relative to max |logit|
LOSS_RTOL = 5e-2  # bf16 autocast training loss vs 'reference'


def no_gpu_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    return None


# ---- part: model ----------------------------------------------------------------------


def _median_ms(fn, device: str, reps: int = 3) -> float:
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()  # warm-up (compiles, autotunes)
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def model_part(json_path: str, device: str = "cuda", backends=MODEL_BACKENDS, batch: int = MODEL_BATCH,
               res: int = 224) -> int:
    """vHeat-T inference and one training step per backend; writes json_path. (Tests run
    it on CPU backends at a small resolution.)"""
    import torch

    from vheat.models import MODEL_ARGS, VHeat
    from vheat.train.atomic import atomic_write_json
    from vheat_kernels.dispatch import BackendUnavailableError

    torch.manual_seed(0)
    model = VHeat(num_classes=1000, img_size=res, **MODEL_ARGS["vheat_tiny"]).to(device)
    images = torch.randn(batch, 3, res, res, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        return loss

    rows, logits = [], {}
    for name in backends:
        model.set_hco_backend(name)
        row = dict(backend=name)
        try:
            model.eval()
            with torch.no_grad():
                logits[name] = model(images).float()
                row["infer_ms"] = _median_ms(lambda: model(images), device)
            model.train()
            torch.manual_seed(1)  # the same drop-path draws for every backend
            row["loss"] = step().item()
            row["grads_finite"] = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
                                      if p.grad is not None)
            row["train_step_ms"] = _median_ms(step, device)
        except BackendUnavailableError as exc:
            row["skipped"] = str(exc)
        except Exception as exc:  # a failing backend is a result; the others still run
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
    ref = next((r for r in rows if r["backend"] == "reference" and "loss" in r), None)
    for r in rows:
        if "loss" not in r:
            r["ok"] = "skipped" in r
            continue
        ok = r["grads_finite"] and bool(torch.isfinite(logits[r["backend"]]).all())
        if ref is not None:
            scale = logits["reference"].abs().max()
            r["logits_rel_err"] = ((logits[r["backend"]] - logits["reference"]).abs().max() / scale).item()
            r["loss_rel_err"] = abs(r["loss"] - ref["loss"]) / abs(ref["loss"])
            ok = ok and r["logits_rel_err"] <= LOGITS_RTOL and r["loss_rel_err"] <= LOSS_RTOL
        r["ok"] = bool(ok)
    atomic_write_json(json_path, dict(model="vheat_tiny", batch=batch, res=res, device=device, rows=rows,
                                      tolerances=dict(logits=LOGITS_RTOL, loss=LOSS_RTOL)), indent=1)
    print(json.dumps(rows, indent=1))
    return 0 if ref is not None and all(r["ok"] for r in rows) else 1


# ---- driver -----------------------------------------------------------------------------


def run_part(name: str, cmd: list[str], timeout: float, out: Path) -> dict:
    """Run one part as a subprocess (its output teed to out/<name>.log)."""
    start = time.monotonic()
    log_path = out / f"{name}.log"
    print(f"== {name}: {' '.join(cmd)} (at most {timeout:.0f} s)", flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in _lines_until(proc, start + timeout):
                sys.stdout.write(line)
                log.write(line)
            rc = proc.wait(timeout=max(0.0, start + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    seconds = time.monotonic() - start
    status = "PASS" if rc == 0 else "FAIL"
    why = f"timed out after {timeout:.0f} s" if rc is None else (f"exit code {rc}" if rc else "")
    return dict(part=name, status=status, why=why, seconds=round(seconds, 1), log=str(log_path))


def _lines_until(proc: subprocess.Popen, deadline: float):
    """Lines of proc's output until it ends or the deadline passes (then TimeoutExpired)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        if not sel.select(timeout=min(left, 1.0)):
            continue
        line = proc.stdout.readline()
        if not line:
            return
        yield line


def junit_summary(path: Path) -> dict:
    """Counts from pytest's JUnit XML (empty when pytest did not get that far)."""
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed_tests"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                              if c.find("failure") is not None or c.find("error") is not None][:50]
    return counts


def summary_markdown(report: dict) -> str:
    lines = [f"# GPU acceptance run: {report['device']}", "", "| part | status | seconds | detail |",
             "|---|---|---:|---|"]
    for p in report["parts"]:
        lines.append(f"| {p['part']} | {p['status']} | {p['seconds']} | {p.get('why') or p.get('detail', '')} |")
    model = report.get("model")
    if model:
        lines += ["", f"## vHeat-T (batch {model['batch']}, {model.get('res', 224)} px)", "",
                  "| backend | inference ms | train step ms (bf16 autocast) | logits err vs reference | ok |",
                  "|---|---:|---:|---:|---|"]
        for r in model["rows"]:
            if "loss" not in r:
                lines.append(f"| {r['backend']} | {r.get('skipped') or r.get('error')} | | | "
                             f"{'skipped' if r['ok'] else 'FAIL'} |")
                continue
            err = r.get("logits_rel_err")
            lines.append(f"| {r['backend']} | {r['infer_ms']:.1f} | {r['train_step_ms']:.1f} | "
                         f"{'n/a' if err is None else f'{err:.1e}'} | {'ok' if r['ok'] else 'FAIL'} |")
    if report.get("bench"):  # from bench_gpu.json, which keeps the finished cases of a killed run
        from benchmarks.bench_gpu import markdown as bench_markdown

        complete = "" if report["bench"].get("complete") else " (incomplete: the bench was stopped)"
        lines += ["", bench_markdown(report["bench"]).replace("# HCO on", "## HCO kernels on", 1).rstrip() + complete]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=["all", "model"], default="all")
    parser.add_argument("--out", default=str(ROOT / "build" / "gpu_check"), help="results folder")
    parser.add_argument("--json", help="model: where to write its JSON")
    parser.add_argument("--budget-s", type=float, default=470.0, help="seconds for all parts together")
    parser.add_argument("--build-status", default="not run", help="PASS / FAIL of the shell script's build")
    parser.add_argument("--build-seconds", type=float, default=0.0)
    parser.add_argument("--build-detail", default="")
    args = parser.parse_args(argv)

    reason = no_gpu_reason()
    if reason is not None:
        print(f"gpu-check: no GPU ({reason}); nothing was checked. Run it on a machine with one CUDA GPU.")
        return 0
    if args.part == "model":
        return model_part(args.json or str(Path(args.out) / "model.json"))

    import torch

    from vheat.train.atomic import atomic_write_json, atomic_write_text
    from vheat_kernels import build_info
    from vheat_kernels.cuda_arch import arch_reason, device_capability

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    py = sys.executable
    parts = [] if args.build_status == "not run" else [
        dict(part="build", status=args.build_status, seconds=args.build_seconds, why=args.build_detail)]
    cuda_reason = (arch_reason(device_capability(0), build_info()) if build_info().get("cuda")
                   else "the op library has no CUDA kernels")
    if parts and parts[0]["status"] == "PASS" and cuda_reason:
        parts[0].update(status="FAIL", why=f"built, but the cuda backend cannot run here: {cuda_reason}")
    commands = {
        "tests": [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests",
                  f"--junitxml={out / 'gpu_tests.xml'}"],
        "bench": [py, "benchmarks/bench_gpu.py", "--json", str(out / "bench_gpu.json"),
                  "--markdown", str(out / "bench_gpu.md")],
        "model": [py, "scripts/gpu_check.py", "model", "--json", str(out / "model.json")],
    }
    for name, cmd in commands.items():
        left = deadline - time.monotonic()
        if left < 10:
            parts.append(dict(part=name, status="FAIL", why="no time left in the budget", seconds=0))
            continue
        parts.append(run_part(name, cmd, min(PART_CAPS[name], left), out))
    tests = junit_summary(out / "gpu_tests.xml")
    tests_part = next(p for p in parts if p["part"] == "tests")
    if tests:
        tests_part["detail"] = (f"{tests['tests']} tests, {tests['failures']} failed, {tests['errors']} errors, "
                                f"{tests['skipped']} skipped")
        if tests["tests"] - tests["skipped"] == 0:
            tests_part.update(status="FAIL", why="no gpu-marked test ran")
    report = dict(device=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                  torch=torch.__version__, build_info=build_info(), parts=parts, tests=tests)
    for name in ("bench", "model"):
        path = out / ("bench_gpu.json" if name == "bench" else "model.json")
        if path.exists():
            report[name] = json.loads(path.read_text())
        else:
            part = next(p for p in parts if p["part"] == name)
            part.update(status="FAIL", why=part.get("why") or f"it wrote no {path.name}")
    atomic_write_json(str(out / "gpu_check.json"), report, indent=1)
    atomic_write_text(str(out / "gpu_check.md"), summary_markdown(report))
    print(f"\ngpu-check on {report['device']} (results: {out}/gpu_check.json, gpu_check.md)")
    for p in parts:
        detail = "; ".join(v for v in (p.get("why"), p.get("detail")) if v)
        print(f"  {p['status']:<5} {p['part']:<6} {p['seconds']:>6.0f} s  {detail}")
    ok = all(p["status"] == "PASS" for p in parts)
    print("gpu-check: PASS" if ok else "gpu-check: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
