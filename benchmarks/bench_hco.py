"""HCO kernel benchmark on this machine: every available backend vs the official
matmul-DCT formulation (four conv1d + einsum, vheat_kernels.reference.hco_matmul_dct),
forward and forward+backward, measured in one run; prints a table, writes JSON.

    python benchmarks/bench_hco.py [--quick] [--json benchmarks/results/hco_cpu.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vheat_kernels as vk  # noqa: E402
from vheat.train.atomic import atomic_write_json  # noqa: E402
from benchmarks.suite.measure import steady_allocator  # noqa: E402

# vHeat-T stages at 224 input with batch 8, then high-resolution planes.
SHAPES = [(8, 56, 56, 96), (8, 28, 28, 192), (8, 14, 14, 384), (8, 7, 7, 768), (1, 128, 128, 96), (1, 256, 256, 96)]
QUICK_SHAPES = [(2, 56, 56, 96), (2, 14, 14, 384), (1, 128, 128, 32)]


# "wall": elapsed time with torch's thread pool. "thread": CPU time of the calling thread
# with one torch thread; it counts only this process's work, so ratios stay meaningful on a
# machine shared with other jobs (cache sharing still perturbs them somewhat).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def time_ms(fn, min_time=0.5, max_reps=50, clock=time.perf_counter) -> float:
    """Median time of fn() in ms after warm-up calls (at least 2, and 0.2 s or min_time)."""
    warm_start, warm_calls = time.perf_counter(), 0
    while warm_calls < 2 or time.perf_counter() - warm_start < min(0.2, min_time):
        fn()
        warm_calls += 1
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) * 1e3


def bench_shape(shape, backends, dtype, min_time, clock=time.perf_counter):
    x = torch.randn(shape, dtype=dtype)
    E = torch.rand(shape[1:], dtype=torch.float32)
    dy = torch.randn(shape, dtype=dtype)
    row = {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "forward_ms": {}, "fwd_bwd_ms": {}}
    row["auto_backend"] = vk.resolve_backend(x, E, "auto").name
    for name in backends:
        def fwd():
            with torch.no_grad():
                vk.heat_conduction(x, E, backend=name)

        xg = x.clone().requires_grad_(True)
        Eg = E.clone().requires_grad_(True)

        def fwd_bwd():
            xg.grad = Eg.grad = None
            vk.heat_conduction(xg, Eg, backend=name).backward(dy)

        row["forward_ms"][name] = time_ms(fwd, min_time, clock=clock)
        row["fwd_bwd_ms"][name] = time_ms(fwd_bwd, min_time, clock=clock)
    base_f, base_b = row["forward_ms"]["reference"], row["fwd_bwd_ms"]["reference"]
    row["forward_speedup"] = {k: base_f / v for k, v in row["forward_ms"].items()}
    row["fwd_bwd_speedup"] = {k: base_b / v for k, v in row["fwd_bwd_ms"].items()}
    return row


def machine_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "build_info": vk.build_info()}


def format_table(rows, backends):
    head = ["shape", "auto"] + [f"{b} fwd ms" for b in backends] + [f"{b} fwd x" for b in backends if b != "reference"]
    head += [f"{b} f+b ms" for b in backends] + [f"{b} f+b x" for b in backends if b != "reference"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["x".join(map(str, r["shape"])), r["auto_backend"]]
        cells += [f"{r['forward_ms'][b]:.2f}" for b in backends]
        cells += [f"{r['forward_speedup'][b]:.2f}" for b in backends if b != "reference"]
        cells += [f"{r['fwd_bwd_ms'][b]:.2f}" for b in backends]
        cells += [f"{r['fwd_bwd_speedup'][b]:.2f}" for b in backends if b != "reference"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes, short timing (smoke run)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--json", default="benchmarks/results/hco_cpu.json")
    p.add_argument("--timer", default="wall", choices=sorted(CLOCKS),
                   help="wall: elapsed time, all threads; thread: CPU time of one thread (shared machines)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timing per measurement")
    args = p.parse_args(argv)
    steady = steady_allocator()
    dtype = getattr(torch, args.dtype)
    if args.timer == "thread":
        torch.set_num_threads(1)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 1.0)
    probe = (torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2))
    backends = [b for b in ("reference", "fft", "cpu") if b in vk.available_backends(*probe)]
    rows = []
    for shape in shapes:
        rows.append(bench_shape(shape, backends, dtype, min_time, CLOCKS[args.timer]))
        r = rows[-1]
        print(f"  {shape}: fwd x{r['forward_speedup'].get('cpu', float('nan')):.2f} (cpu), "
              f"auto={r['auto_backend']} x{r['forward_speedup'][r['auto_backend']]:.2f}", file=sys.stderr)
    payload = {"benchmark": "hco_kernels", "baseline": "reference (official matmul-DCT: 4x conv1d + einsum)",
               "machine": machine_info(), "dtype": args.dtype, "timer": args.timer,
               "load_average": os.getloadavg(), "steady_allocator": steady, "rows": rows}
    atomic_write_json(args.json, payload, indent=2)
    print(f"\nHCO {args.dtype} on {payload['machine']['cpu']} ({payload['machine']['threads']} threads, "
          f"{args.timer} clock, load average {payload['load_average'][0]:.1f}); "
          f"speedups (x) are vs the official matmul-DCT measured in this run. JSON: {args.json}\n")
    print(format_table(rows, backends))
    return payload


if __name__ == "__main__":
    main()
