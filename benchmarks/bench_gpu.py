"""GPU benchmark of every HCO formulation: time, achieved bandwidth, speedups, auto's pick.

Times, on one GPU and in one run, the registered backends through the public API
(``heat_conduction(x, E, backend=name)``: 'cuda', 'triton', 'fft' and 'reference', the
official matmul-DCT) and a plain channels-last 4-matmul formulation
(``vheat_kernels.reference.hco_matmul4``: torch.matmul against the cosine matrices along H,
along W, scale, and back), the strongest non-fused peer at small planes. Each row: forward
and backward medians of triton.testing.do_bench (which flushes L2), the effective
bandwidth (bytes a fused kernel must move, see fused_bytes, over the time) against the
device's measured copy bandwidth,
speedups against matmul-DCT and against 4-matmul measured in the same run, and the error
against a float64 HCO. Per (shape, dtype) it also names the backend 'auto' picks and the
fastest one (forward + backward), so the dispatch rule (docs/cuda.md) can be checked.

Shapes default to every HCO plane of vHeat-T/S and vHeat-B at 224 (batch --batch) and 512
(batch 1) input, as benchmarks/suite/kernel.py defines them.

    python benchmarks/bench_gpu.py --json bench_gpu.json --markdown bench_gpu.md
    python benchmarks/bench_gpu.py --dtype bf16 --shape 8,56,56,96 --backend cuda --backend triton

Exit code: 0 all rows ran within tolerance, 1 a formulation failed or was inaccurate,
2 no CUDA device.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.suite.kernel import stage_shapes  # noqa: E402
from vheat.io import atomic_write_json, atomic_write_text  # noqa: E402
from vheat_kernels.reference import hco_matmul4  # noqa: E402
from vheat_kernels.stages import FAMILIES  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("cuda", "triton", "fft", "reference")
FOUR_MATMUL = "4-matmul"
FORMULATIONS = BACKENDS + (FOUR_MATMUL,)
# Largest accepted error relative to max |y|, against the float64 HCO.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}


def formulation(name: str):
    if name == FOUR_MATMUL:
        return hco_matmul4
    from vheat_kernels import heat_conduction

    return lambda x, E: heat_conduction(x, E, backend=name)


def _do_bench_ms(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=200)


def copy_bandwidth_gbs(nbytes: int = 1 << 30, device: str = "cuda", time_ms=_do_bench_ms) -> float:
    """Measured copy bandwidth (read + write) of ``device``, GB/s; ``time_ms(fn)`` times one
    copy in ms (default: do_bench, L2 flushed between calls)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return 2 * nbytes / (time_ms(lambda: dst.copy_(src)) * 1e-3) / 1e9


def fused_bytes(B: int, H: int, W: int, C: int, s: int, e: int, backward: bool) -> int:
    """Bytes a fused kernel must move: forward reads x, E and writes y; backward reads x,
    dy, E and writes dx, dE."""
    n, plane = B * H * W * C * s, H * W * C * e
    return (3 * n + 2 * plane) if backward else (2 * n + plane)


def bench_one(name: str, x: torch.Tensor, E: torch.Tensor, ref: torch.Tensor, rep_ms: int) -> dict:
    from triton.testing import do_bench

    fn = formulation(name)
    xg, Eg = x.clone().requires_grad_(True), E.clone().requires_grad_(True)
    y = fn(xg, Eg)
    err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
    dy = torch.randn_like(y)
    with torch.no_grad():
        fwd_ms = do_bench(lambda: fn(x, E), warmup=10, rep=rep_ms)
    bwd_ms = do_bench(lambda: torch.autograd.grad(y, (xg, Eg), dy, retain_graph=True), warmup=10, rep=rep_ms)
    return dict(backend=name, fwd_ms=fwd_ms, bwd_ms=bwd_ms, rel_err=err)


def heat_conduction_fp64(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Float64 HCO through the fft backend: the accuracy yardstick of every row."""
    from vheat_kernels import heat_conduction

    return heat_conduction(x.double(), E.double(), backend="fft").float()


def bench_case(shape, dname, wanted, copy_gbs, rep_ms) -> tuple[list[dict], dict]:
    """Rows of every wanted formulation on one (shape, dtype), and the case summary."""
    from vheat_kernels.dispatch import available_backends, resolve_backend

    B, H, W, C = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", generator=gen).to(DTYPES[dname])
    E = torch.rand((H, W, C), device="cuda", generator=gen)
    ref = heat_conduction_fp64(x, E)
    runnable = set(available_backends(x, E)) | {FOUR_MATMUL}
    rows, skipped = [], [n for n in wanted if n not in runnable]
    for name in (n for n in wanted if n in runnable):
        try:
            r = bench_one(name, x, E, ref, rep_ms)
        except Exception as exc:  # a failing formulation is a result, not the end of the run
            r = dict(backend=name, error=f"{type(exc).__name__}: {exc}"[:500])
            print(f"{str(shape):<20} {dname:<5} {name:<9} FAILED {r['error']}", flush=True)
        r.update(shape=list(shape), dtype=dname)
        if "error" not in r:
            es = x.element_size()
            r["fwd_gbs"] = fused_bytes(B, H, W, C, es, E.element_size(), False) / (r["fwd_ms"] * 1e-3) / 1e9
            r["bwd_gbs"] = fused_bytes(B, H, W, C, es, E.element_size(), True) / (r["bwd_ms"] * 1e-3) / 1e9
            r["fwd_copy_frac"], r["bwd_copy_frac"] = r["fwd_gbs"] / copy_gbs, r["bwd_gbs"] / copy_gbs
            r["accurate"] = r["rel_err"] <= TOLERANCE[dname]
        rows.append(r)
    timed = {r["backend"]: r for r in rows if "error" not in r}
    for r in timed.values():
        for base in ("reference", FOUR_MATMUL):
            if base in timed:
                b = timed[base]
                r[f"fwd_speedup_vs_{base}"] = b["fwd_ms"] / r["fwd_ms"]
                r[f"total_speedup_vs_{base}"] = (b["fwd_ms"] + b["bwd_ms"]) / (r["fwd_ms"] + r["bwd_ms"])
    backends_timed = [n for n in timed if n in BACKENDS]
    fastest = min(backends_timed, key=lambda n: timed[n]["fwd_ms"] + timed[n]["bwd_ms"]) if backends_timed else None
    case = dict(shape=list(shape), dtype=dname, auto=resolve_backend(x, E, "auto").name, fastest_backend=fastest,
                skipped=skipped)
    return rows, case


def text_table(rows: list[dict], header: bool = True) -> str:
    head = (f"{'shape':<20} {'dtype':<5} {'backend':<9} {'fwd ms':>8} {'GB/s':>6} {'%copy':>6} {'bwd ms':>8} "
            f"{'GB/s':>6} {'%copy':>6} {'x mmDCT':>8} {'x 4mm':>6} {'rel err':>8}")
    out = [head, "-" * len(head)] if header else []
    for r in rows:
        if "error" in r:
            out.append(f"{str(tuple(r['shape'])):<20} {r['dtype']:<5} {r['backend']:<9} FAILED: {r['error'][:80]}")
            continue
        out.append(f"{str(tuple(r['shape'])):<20} {r['dtype']:<5} {r['backend']:<9} {r['fwd_ms']:>8.3f} "
                   f"{r['fwd_gbs']:>6.0f} {100 * r['fwd_copy_frac']:>5.0f}% {r['bwd_ms']:>8.3f} {r['bwd_gbs']:>6.0f} "
                   f"{100 * r['bwd_copy_frac']:>5.0f}% {r.get('total_speedup_vs_reference', float('nan')):>8.2f} "
                   f"{r.get(f'total_speedup_vs_{FOUR_MATMUL}', float('nan')):>6.2f} {r['rel_err']:>8.1e}")
    return "\n".join(out)


def markdown(payload: dict) -> str:
    lines = [f"# HCO on {payload['device']}", "",
             f"Measured copy bandwidth {payload['copy_gbs']:.0f} GB/s; torch {payload['torch']}. Times are "
             "do_bench medians; GB/s = fused-kernel bytes / time; speedups are (fwd + bwd) time of matmul-DCT "
             "('reference') or of 4-matmul over this row's, same run.", "",
             "| shape (B,H,W,C) | dtype | backend | fwd ms | fwd % copy | bwd ms | bwd % copy | x matmul-DCT "
             "| x 4-matmul | rel err | ok |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in payload["results"]:
        if "error" in r:
            lines.append(f"| {tuple(r['shape'])} | {r['dtype']} | {r['backend']} | failed: {r['error'][:120]} "
                         "| | | | | | | FAIL |")
            continue
        lines.append(
            f"| {tuple(r['shape'])} | {r['dtype']} | {r['backend']} | {r['fwd_ms']:.3f} | "
            f"{100 * r['fwd_copy_frac']:.0f}% | {r['bwd_ms']:.3f} | {100 * r['bwd_copy_frac']:.0f}% | "
            f"{r.get('total_speedup_vs_reference', float('nan')):.2f} | "
            f"{r.get(f'total_speedup_vs_{FOUR_MATMUL}', float('nan')):.2f} | {r['rel_err']:.1e} | "
            f"{'ok' if r['accurate'] else 'INACCURATE'} |")
    lines += ["", "| shape (B,H,W,C) | dtype | auto picks | fastest (fwd + bwd) | not runnable here |",
              "|---|---|---|---|---|"]
    for c in payload["cases"]:
        lines.append(f"| {tuple(c['shape'])} | {c['dtype']} | {c['auto']} | {c['fastest_backend']} | "
                     f"{', '.join(c['skipped']) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", help="B,H,W,C (repeatable); default: vHeat stage shapes")
    parser.add_argument("--family", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--res", nargs="+", type=int, default=[224, 512], help="input resolutions")
    parser.add_argument("--batch", type=int, default=8, help="batch at 224 (1 above, as the suite)")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="repeatable; default fp32 and bf16")
    parser.add_argument("--backend", action="append", choices=FORMULATIONS, help="repeatable; default all")
    parser.add_argument("--rep-ms", type=int, default=50, help="do_bench measuring time per timing")
    parser.add_argument("--json", default="bench_gpu.json", help="results file (written atomically)")
    parser.add_argument("--markdown", help="also write the tables as markdown here")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device visible (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 2

    if args.shape:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape]
    else:
        shapes = list(dict.fromkeys(s for *_, s in stage_shapes(args.family, args.res, args.batch)))
    wanted = args.backend or list(FORMULATIONS)
    copy_gbs = copy_bandwidth_gbs()
    device = torch.cuda.get_device_name()
    print(f"{device}: measured copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    print(text_table([]), flush=True)
    out = os.path.abspath(args.json)
    results, cases = [], []

    def payload() -> dict:
        failed = [r for r in results if "error" in r or not r["accurate"]]
        return dict(device=device, copy_gbs=copy_gbs, torch=torch.__version__,
                    capability=list(torch.cuda.get_device_capability()), results=results, cases=cases,
                    failed=len(failed), complete=len(cases) == len(shapes) * len(dtypes))

    dtypes = args.dtype or ["fp32", "bf16"]
    for shape in shapes:
        for dname in dtypes:
            rows, case = bench_case(shape, dname, wanted, copy_gbs, args.rep_ms)
            results += rows
            cases.append(case)
            print(text_table(rows, header=False), flush=True)
            print(f"{'':<20} auto picks {case['auto']}, fastest {case['fastest_backend']}", flush=True)
            atomic_write_json(out, payload(), indent=1)  # after every case: a killed run keeps its rows
    print(f"wrote {out}")
    final = payload()
    if args.markdown:
        atomic_write_text(os.path.abspath(args.markdown), markdown(final))
        print(f"wrote {os.path.abspath(args.markdown)}")
    return 1 if final["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
