"""GPU acceptance run (`make gpu-check`, driven by scripts/gpu_check.sh).

Offline and on the Python that is there: nothing is installed or downloaded. Steps, in
this order (the cheapest evidence first, so a short window still yields the most):

  correctness  triton and cuda vs 'reference', first AND second call per shape: y, dx, dE
               on every plane vHeat-T/S/B runs at 224 (B = 128) and the four detection
               planes of an 800 x 1333 input (B = 2), bf16 and fp32; the float64
               'reference' as oracle where cheap
  train        one vHeat-T training step (batch 64, bf16 autocast) per backend: every
               parameter's gradient against the 'reference' backend's
  timing       HCO kernels at training batch (L2 flushed, CUDA events): triton, cuda, the
               4-matmul cuBLAS peer, torch.compile of the official matmul-DCT, and the HBM
               floor at the measured copy bandwidth; forward and forward + backward
  model        whole vHeat-T images/s at batch 128: fp32 inference and a bf16 training
               step, per backend and for the official model code
  tune         times every candidate configuration of each Triton launch (on copies of
               its arguments) and writes tuned_configs.json (see docs/triton.md)

Each step runs in its own subprocess under its own share of the budget (a hang or a dead
CUDA context cannot take the others with it) and appends one JSON line per case to
results.jsonl as soon as the case is measured, so a killed run keeps what it measured.
At the end gpu_check.json (everything) and gpu_check.md (tables) are written.

GPU_CHECK_DRY_RUN=1 (``--dry-run``) runs every step on CPU tensors with tiny shapes
(Triton in its interpreter), so the script itself is tested without a GPU.

    python scripts/gpu_check.py --out build/gpu_check --budget-s 300
    python scripts/gpu_check.py --step timing --out build/gpu_check    # one step
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("correctness", "train", "timing", "model", "tune")
# Seconds each step may take at most (an H100 run should fit well inside each).
STEP_CAPS = {"correctness": 150, "train": 70, "timing": 110, "model": 100, "tune": 60}
BACKENDS = ("triton", "cuda")
DTYPES = ("bf16", "fp32")
TRAIN_BATCH, MODEL_BATCH = 64, 128
# B of the kernel planes: vHeat's ImageNet batch per GPU, and Mask R-CNN's images per GPU.
PLANE_BATCH, DETECTION_BATCH = 128, 2
# Largest accepted error relative to max |reference| (the GPU benchmark's table), and for
# the training step's parameter gradients (bf16 autocast everywhere but the HCO).
GRAD_RTOL = 5e-2
ORACLE_MAX_ELEMENTS = 1 << 22  # float64 oracle only below this many elements


class Context:
    """Device, sizes and the results file of one step."""

    def __init__(self, out: Path, dry_run: bool, deadline: float = float("inf")):
        import torch

        self.out, self.dry_run, self.deadline = out, dry_run, deadline
        self.device = "cpu" if dry_run else "cuda"
        if dry_run:
            os.environ["TRITON_INTERPRET"] = "1"
            torch.set_num_threads(1)
        self.results = out / "results.jsonl"
        # Whole-model steps of the dry run take the compiled cpu kernel in triton's place:
        # interpreted, one vHeat training step costs seconds even at micro size.
        self.model_backends = ("cpu", "cuda") if dry_run else BACKENDS

    def record(self, step: str, **row) -> dict:
        """Append one case to results.jsonl at once (flushed and synced: a kill keeps it)."""
        row = dict(step=step, **row)
        with open(self.results, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(json.dumps(row), flush=True)
        return row

    def out_of_time(self, step: str) -> bool:
        """True (and recorded once) when the step's share of the budget is spent: the
        measuring steps stop there with what they have instead of being killed mid-case."""
        if time.time() < self.deadline:
            return False
        self.record(step, incomplete="out of time: the remaining cases were not run")
        return True

    def planes(self) -> list[tuple[str, tuple]]:
        """(label, (B, H, W, C)) of the correctness step."""
        if self.dry_run:
            return [("tiny resident", (2, 7, 7, 3)), ("tiny streamed", (1, 20, 34, 2))]
        from vheat_kernels.stages import PLANES

        out = [(label, (PLANE_BATCH, *plane)) for label in ("T/S@224", "B@224") for plane in PLANES[label]]
        return out + [("det T/S", (DETECTION_BATCH, *plane)) for plane in PLANES["det T/S"]]

    def timing_planes(self) -> list[tuple]:
        if self.dry_run:
            return [(2, 7, 7, 3)]
        from vheat_kernels.stages import stage_shapes

        return stage_shapes("T", 224, PLANE_BATCH)

    def sync(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def time_ms(self, fn) -> float:
        """Median ms: do_bench on a GPU (CUDA events, L2 flushed between calls), a few
        perf_counter reps on the CPU."""
        if self.device == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=10, rep=60))
        fn()
        times = []
        for _ in range(1 if self.dry_run else 3):
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
        return sorted(times)[len(times) // 2]


def _dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[name]


def _hco_grads(backend: str, x, E, dy):
    """y, dx, dE of one forward + backward through the public API."""
    import torch

    from vheat_kernels import heat_conduction

    xg, Eg = x.detach().clone().requires_grad_(True), E.detach().clone().requires_grad_(True)
    y = heat_conduction(xg, Eg, backend=backend)
    dx, dE = torch.autograd.grad(y, (xg, Eg), dy)
    return y.detach(), dx, dE


def _inputs(shape, dtype, device, seed=0):
    import torch

    B, H, W, C = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, device=device, generator=gen).to(dtype)
    E = torch.rand((H, W, C), device=device, generator=gen).to(dtype)
    dy = torch.randn(shape, device=device, generator=gen).to(dtype)
    return x, E, dy


# ---- steps ----------------------------------------------------------------------------------


def step_correctness(ctx: Context) -> bool:
    from vheat_kernels.dispatch import BackendUnavailableError
    from vheat_kernels.testing import AGAINST_REFERENCE, relative_error

    ok = True
    for label, shape in ctx.planes():
        for dname in DTYPES:
            x, E, dy = _inputs(shape, _dtype(dname), ctx.device)
            ref = _hco_grads("reference", x, E, dy)
            oracle = None
            if x.numel() <= ORACLE_MAX_ELEMENTS:
                oracle = _hco_grads("reference", x.double(), E.double(), dy.double())
            tol = AGAINST_REFERENCE[_dtype(dname)]
            for backend in BACKENDS:
                for call in (1, 2):
                    row = dict(plane=label, shape=list(shape), dtype=dname, backend=backend, call=call)
                    try:
                        got = _hco_grads(backend, x, E, dy)
                    except BackendUnavailableError as exc:
                        ctx.record("correctness", **row, skipped=str(exc)[:300])
                        break
                    ctx.sync()
                    errs = {q: relative_error(g, r) for q, g, r in zip(("y", "dx", "dE"), got, ref)}
                    row.update({f"{q}_err": e for q, e in errs.items()}, tolerance=tol)
                    if oracle is not None:
                        row.update({f"{q}_err_fp64": relative_error(g, r) for q, g, r in zip(("y", "dx", "dE"), got, oracle)})
                    row["ok"] = all(e <= tol for e in errs.values())
                    ok &= row["ok"]
                    ctx.record("correctness", **row)
    return ok


# The dry run's model: vHeat-T's blocks at micro width and depth (the official micro
# golden's), 32 px input, so the interpreted Triton kernels finish in seconds.
DRY_RUN_MODEL = dict(depths=(1, 1, 2, 1), dims=16)


def _vheat_tiny(ctx: Context, res: int):
    import torch

    from vheat.models import MODEL_ARGS, VHeat

    torch.manual_seed(0)
    # No drop path: every backend's step must see the same network.
    kwargs = {**MODEL_ARGS["vheat_tiny"], "drop_path_rate": 0.0, **(DRY_RUN_MODEL if ctx.dry_run else {})}
    return VHeat(num_classes=1000, img_size=res, **kwargs).to(ctx.device)


def step_train(ctx: Context) -> bool:
    import torch

    from vheat_kernels.dispatch import BackendUnavailableError
    from vheat_kernels.testing import relative_error

    res, batch = (32, 2) if ctx.dry_run else (224, TRAIN_BATCH)
    model = _vheat_tiny(ctx, res).train()
    gen = torch.Generator(device=ctx.device).manual_seed(1)
    images = torch.randn(batch, 3, res, res, device=ctx.device, generator=gen)
    labels = torch.randint(0, 1000, (batch,), device=ctx.device, generator=gen)

    def grads(backend):
        model.set_hco_backend(backend)
        model.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_loss, ref = grads("reference")
    ok = True
    for backend in ctx.model_backends:
        try:
            loss, got = grads(backend)
        except BackendUnavailableError as exc:
            ctx.record("train", backend=backend, skipped=str(exc)[:300])
            continue
        errs = {n: relative_error(got[n], g) for n, g in ref.items() if n in got}
        worst = max(errs, key=errs.get)
        missing = sorted(set(ref) - set(got))
        row_ok = not missing and errs[worst] <= GRAD_RTOL and bool(torch.isfinite(torch.tensor(loss)))
        ok &= row_ok
        ctx.record("train", backend=backend, batch=batch, res=res, loss=loss, ref_loss=ref_loss,
                   params=len(errs), worst_param=worst, worst_grad_err=errs[worst], tolerance=GRAD_RTOL,
                   missing_grads=missing, ok=row_ok)
    return ok


def step_timing(ctx: Context) -> bool:
    import torch

    from benchmarks.bench_gpu import copy_bandwidth_gbs
    from vheat_kernels import heat_conduction
    from vheat_kernels.dispatch import BackendUnavailableError
    from vheat_kernels.reference import hco_matmul4, hco_matmul_dct

    copy_gbs = copy_bandwidth_gbs((1 << 22) if ctx.dry_run else (1 << 30), ctx.device, ctx.time_ms)
    ctx.record("timing", case="copy bandwidth", copy_gbs=copy_gbs)
    candidates = {b: (lambda x, E, b=b: heat_conduction(x, E, backend=b)) for b in BACKENDS}
    candidates["4-matmul"] = hco_matmul4
    if not ctx.dry_run:  # inductor on the CPU would spend the dry run compiling
        candidates["compiled matmul-DCT"] = torch.compile(hco_matmul_dct)
    for shape in ctx.timing_planes():
        for dname in ("bf16",) if ctx.dry_run else DTYPES:
            if ctx.out_of_time("timing"):
                return True
            x, E, dy = _inputs(shape, _dtype(dname), ctx.device)
            n, plane = x.numel() * x.element_size(), E.numel() * E.element_size()
            floors = dict(forward=(2 * n + plane) / (copy_gbs * 1e9) * 1e3,
                          fwd_bwd=(2 * n + plane + 3 * n + 2 * plane) / (copy_gbs * 1e9) * 1e3)
            for pass_ in ("forward", "fwd_bwd"):
                ctx.record("timing", shape=list(shape), dtype=dname, pass_=pass_, candidate="HBM floor",
                           ms=floors[pass_])
            for name, fn in candidates.items():
                xg, Eg = x.clone().requires_grad_(True), E.clone().requires_grad_(True)
                for pass_ in ("forward", "fwd_bwd"):
                    row = dict(shape=list(shape), dtype=dname, pass_=pass_, candidate=name)
                    try:
                        if pass_ == "forward":
                            with torch.no_grad():
                                ms = ctx.time_ms(lambda: fn(x, E))
                        else:
                            ms = ctx.time_ms(lambda: torch.autograd.grad(fn(xg, Eg), (xg, Eg), dy))
                    except BackendUnavailableError as exc:
                        ctx.record("timing", **row, skipped=str(exc)[:300])
                        break
                    except Exception as exc:  # a failing peer is a result; the rest still run
                        ctx.record("timing", **row, error=f"{type(exc).__name__}: {exc}"[:300])
                        continue
                    ctx.record("timing", **row, ms=ms, x_floor=ms / floors[pass_])
    return True


def step_model(ctx: Context) -> bool:
    import torch

    from benchmarks.suite.official_vheat import OfficialVHeat
    from vheat_kernels.dispatch import BackendUnavailableError

    res, batch = (32, 2) if ctx.dry_run else (224, MODEL_BATCH)
    gen = torch.Generator(device=ctx.device).manual_seed(2)
    images = torch.randn(batch, 3, res, res, device=ctx.device, generator=gen)
    labels = torch.randint(0, 1000, (batch,), device=ctx.device, generator=gen)
    ours = _vheat_tiny(ctx, res)
    # A copy per run: folding for "infer fp32" is one-way, and the next run trains.
    runs = [(b, lambda: copy.deepcopy(ours), b) for b in ctx.model_backends] + [("official", lambda: OfficialVHeat.like(ours).to(ctx.device), None)]
    for label, make, backend in runs:
        if ctx.out_of_time("model"):
            return True
        model = make()
        if backend is not None:
            model.set_hco_backend(backend)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(ctx.device, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad():
                model(images)

        for mode, fn in (("train bf16", train), ("infer fp32", infer)):
            if mode == "infer fp32":
                model.eval()
                if hasattr(model, "set_infer_mode"):
                    model.set_infer_mode(True)
                elif hasattr(model, "infer_init"):
                    model.infer_init()
            else:
                model.train()
            row = dict(model="vheat_tiny", run=label, mode=mode, batch=batch, res=res)
            try:
                ms = ctx.time_ms(fn)
            except BackendUnavailableError as exc:
                ctx.record("model", **row, skipped=str(exc)[:300])
                break
            except Exception as exc:
                ctx.record("model", **row, error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            ctx.record("model", **row, ms=ms, images_per_s=batch / (ms * 1e-3))
    return True


def step_tune(ctx: Context) -> bool:
    """Time each candidate configuration of every Triton launch on copies of its arguments;
    write the fastest per launch to tuned_configs.json (configs.TUNED_FILE's format)."""
    import dataclasses

    import torch

    from vheat.io import atomic_write_json
    from vheat_kernels.triton import hco

    arch = 0 if ctx.dry_run else hco._arch(torch.empty(0, device="cuda"))  # sm_0: the interpreter
    table: dict[str, list] = {}
    for _, shape in ctx.planes()[:1] if ctx.dry_run else ctx.planes():
        for dname in DTYPES:
            x, E, dy = _inputs(shape, _dtype(dname), ctx.device)
            plans = [hco.forward_plan(x, E, torch.empty_like(x))]
            plans.append(hco.backward_plan(dy, x, E, torch.empty_like(x), True, True)[0])
            for plan in plans:
                for launch in plan:
                    key = launch.tuned_key(arch)
                    if len(launch.configs) < 2 or key in table:
                        continue
                    if ctx.out_of_time("tune"):
                        return True
                    copies = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in launch.args.items()}
                    trial = dataclasses.replace(launch, args=copies)
                    times = {c: ctx.time_ms(lambda c=c: hco.run([trial], config=c)) for c in launch.configs}
                    best = min(times, key=times.get)
                    table[key] = list(dataclasses.astuple(best))
                    ctx.record("tune", key=key, best=table[key], ms={str(dataclasses.astuple(c)): t
                                                                     for c, t in times.items()})
                    atomic_write_json(str(ctx.out / "tuned_configs.json"), table, indent=1)
    return True


STEP_FUNCTIONS = dict(correctness=step_correctness, train=step_train, timing=step_timing, model=step_model,
                      tune=step_tune)


# ---- driver ---------------------------------------------------------------------------------


def run_step(name: str, out: Path, timeout: float, dry_run: bool) -> dict:
    """One step in its own subprocess, its output teed to out/<name>.log."""
    # The step stops measuring a few seconds before its cap; the cap kills it if it does not.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out", str(out),
           "--deadline", str(time.time() + 0.9 * timeout)]
    if dry_run:
        cmd.append("--dry-run")
    start = time.monotonic()
    print(f"== {name} (at most {timeout:.0f} s)", flush=True)
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    seconds = round(time.monotonic() - start, 1)
    if rc == 0:
        return dict(step=name, status="PASS", seconds=seconds)
    why = f"timed out after {timeout:.0f} s" if rc is None else f"exit code {rc} (see {name}.log)"
    if rc not in (0, 1, None):
        print((out / f"{name}.log").read_text()[-3000:], flush=True)
    return dict(step=name, status="FAIL", seconds=seconds, why=why)


def read_results(path: Path) -> list[dict]:
    """results.jsonl's rows; a line cut short by a kill is skipped."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def summary_markdown(report: dict) -> str:
    lines = [f"# GPU acceptance run: {report['device']}", "",
             f"torch {report['torch']}, triton {report.get('triton')}, op library {report.get('build_info')}", "",
             "| step | status | seconds | detail |", "|---|---|---:|---|"]
    rows = report["results"]
    incomplete = {r["step"] for r in rows if "incomplete" in r}
    for p in report["steps"]:
        why = p.get("why", "") or ("incomplete: out of time" if p["step"] in incomplete else "")
        lines.append(f"| {p['step']} | {p['status']} | {p['seconds']} | {why} |")
    bad = [r for r in rows if r["step"] in ("correctness", "train") and r.get("ok") is False]
    lines += ["", f"Correctness and training cases: {sum('ok' in r for r in rows)} checked, {len(bad)} failed."]
    for r in bad[:20]:
        lines.append(f"- FAILED {json.dumps(r)}")
    timing = [r for r in rows if r["step"] == "timing" and "ms" in r]
    if timing:
        lines += ["", "## HCO timing (ms; x floor = time / HBM floor)", "",
                  "| shape | dtype | pass | candidate | ms | x floor |", "|---|---|---|---|---:|---:|"]
        for r in timing:
            lines.append(f"| {tuple(r['shape'])} | {r['dtype']} | {r['pass_']} | {r['candidate']} | {r['ms']:.3f} | "
                         f"{r.get('x_floor', 1.0):.2f} |")
        lines += ["", "Adopt these times: `python benchmarks/bytes_model.py --update --measured results.jsonl` "
                  "fills docs/bytes_model.md's measured column and rewrites CUDA auto's table "
                  "(vheat_kernels/auto_table.json) from them."]
    model = [r for r in rows if r["step"] == "model" and "ms" in r]
    if model:
        lines += ["", "## vHeat-T", "", "| run | mode | batch | ms | images/s |", "|---|---|---:|---:|---:|"]
        for r in model:
            lines.append(f"| {r['run']} | {r['mode']} | {r['batch']} | {r['ms']:.1f} | {r['images_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "build" / "gpu_check"), help="results folder")
    parser.add_argument("--step", choices=STEPS, help="run one step in this process")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps of a full run")
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds for all steps together")
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_CHECK_DRY_RUN") == "1",
                        help="CPU tensors, tiny shapes, Triton interpreted (also GPU_CHECK_DRY_RUN=1)")
    parser.add_argument("--build", default="not run", help="what the shell script did to build the op library")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="--step: stop measuring at this time")
    args = parser.parse_args(argv)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no GPU (torch.cuda.is_available() is False); nothing was checked. "
              "Run it on a machine with one CUDA GPU, or set GPU_CHECK_DRY_RUN=1.")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.step:
        return 0 if STEP_FUNCTIONS[args.step](Context(out, args.dry_run, args.deadline)) else 1

    from vheat.io import atomic_write_json, atomic_write_text
    from vheat_kernels import build_info

    results = out / "results.jsonl"
    if results.exists():  # a fresh run: keep the previous one's rows beside it, never mix them
        results.replace(out / f"results.{int(results.stat().st_mtime)}.jsonl")
    deadline = time.monotonic() + args.budget_s
    steps = []
    for name in args.steps.split(","):
        left = deadline - time.monotonic()
        if left < 10:
            steps.append(dict(step=name, status="FAIL", seconds=0, why="no time left in the budget"))
            continue
        steps.append(run_step(name, out, min(STEP_CAPS[name], left), args.dry_run))
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name()
    report = dict(device=device, dry_run=args.dry_run, torch=torch.__version__, triton=triton_version,
                  build=args.build, build_info=build_info(), steps=steps, results=read_results(results))
    atomic_write_json(str(out / "gpu_check.json"), report, indent=1)
    atomic_write_text(str(out / "gpu_check.md"), summary_markdown(report))
    print(f"\ngpu-check on {device} (results: {out}/gpu_check.json, gpu_check.md)")
    for p in steps:
        print(f"  {p['status']:<5} {p['step']:<12} {p['seconds']:>6.0f} s  {p.get('why', '')}")
    ok = all(p["status"] == "PASS" for p in steps)
    print("gpu-check: PASS" if ok else "gpu-check: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
