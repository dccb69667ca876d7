"""HCO kernel benchmark on this machine: our CPU backends against everything a user could
run instead (the official matmul-DCT, the plain channels-last 4-matmul formulation, scipy's
dctn/idctn; benchmarks/peers.py), forward and forward+backward, with 1 and 2 threads, all
candidates of a shape timed interleaved in one run. Beside the times: the best peer and the
fused kernel's speedup over it, and two floors: the time of copying the input to the output
(x -> y; with the backward also dy -> dx), and the dense matmul-DCT's flops at this run's
measured GEMM peak (the best a matmul-based peer could do). Prints tables; writes JSON to
build/bench/hco_cpu.json, or where --json says (--update: the tracked file of this machine
class, benchmarks/results/hco_cpu_<cpu>_<isa>.json, so that a run on one CPU never
overwrites another's; machine_class() names it).

    python benchmarks/bench_hco.py [--quick] [--threads 1,2] [--json PATH | --update]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import vheat_kernels as vk  # noqa: E402
from vheat_kernels.stages import PLANES, stage_shapes  # noqa: E402
from vheat.io import atomic_write_json  # noqa: E402
from benchmarks.machine import git_revision, machine_class, machine_info, machine_label  # noqa: E402
from benchmarks.peers import PEERS, candidates  # noqa: E402
from benchmarks.suite.kernel import matmul_dct_flops  # noqa: E402
from benchmarks.suite.measure import steady_allocator, time_paired  # noqa: E402

# vHeat-T/S and vHeat-B stages at 224 input with batch 8, stage 1 of T/S at 512 and 1024
# input (batch 1), and stage 1 of a detection input (batch 2).
SHAPES = (stage_shapes("T/S", 224, 8) + stage_shapes("B", 224, 8)
          + [(1, *PLANES["T/S@512"][0]), (1, *PLANES["T/S@1024"][0]), (2, *PLANES["det T/S"][0])])
# Smoke run: vHeat-T's stages 1 and 3 at batch 2, and a high-resolution plane with few channels.
QUICK_SHAPES = [stage_shapes("T", 224, 2)[0], stage_shapes("T", 224, 2)[2], (1, 128, 128, 32)]
DEFAULT_JSON = "build/bench/hco_cpu.json"
RESULTS_DIR = "benchmarks/results"
OFFICIAL = "reference"
PASSES = ("forward", "fwd_bwd")


def clock_for(threads: int, timer: str):
    """Thread CPU time with one thread (counts only this process on a shared machine); wall
    clock with more, where the work of the other threads must count."""
    if timer == "thread" or (timer == "auto" and threads == 1):
        return time.thread_time
    return time.perf_counter


def gemm_peak_gflops(clock, min_time: float) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / (time_paired({"mm": lambda: torch.matmul(a, b)}, min_time, clock=clock)["mm"] * 1e-3) / 1e9


def bench_shape(shape, backends, dtype, min_time, clock, peak_gflops):
    x = torch.randn(shape, dtype=dtype)
    E = torch.rand(shape[1:], dtype=torch.float32)
    dy = torch.randn(shape, dtype=dtype)
    out, dx = torch.empty_like(x), torch.empty_like(x)
    pairs = candidates(x, E, dy, backends)
    copies = (lambda: out.copy_(x), lambda: (out.copy_(x), dx.copy_(dy)))
    row = {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
           "auto_backend": vk.resolve_backend(x, E, "auto").name}
    for i, pass_name in enumerate(PASSES):
        fns = {name: pair[i] for name, pair in pairs.items()}
        fns["copy"] = copies[i]
        # At least 5 rounds: the slowest candidates (fft on the large planes, seconds per call)
        # leave time for few, and the median of 3 shuffled rounds moved with one hiccup.
        ms = time_paired(fns, min_time, min_reps=5, clock=clock)
        copy_ms = ms.pop("copy")
        peers = {n: ms[n] for n in (OFFICIAL,) + PEERS if n in ms}
        best = min(peers, key=peers.get)
        row[pass_name] = {
            "ms": ms, "best_peer": best,
            "speedup_vs_best_peer": {n: peers[best] / t for n, t in ms.items()},
            "speedup_vs_official": {n: ms[OFFICIAL] / t for n, t in ms.items()},
            "copy_floor_ms": copy_ms,
            "gemm_floor_ms": matmul_dct_flops(shape, i == 1) / (peak_gflops * 1e9) * 1e3,
        }
    return row


def format_table(rows, names, pass_name, ours="cpu"):
    """One markdown table: ms of every candidate, best peer, our speedup over it, floors."""
    head = ["shape", "auto"] + [f"{n} ms" for n in names] + ["best peer", f"{ours} x best peer",
                                                           "copy floor ms", f"{ours} / copy", "GEMM floor ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = r[pass_name]
        cells = ["x".join(map(str, r["shape"])), r["auto_backend"]]
        cells += [f"{p['ms'][n]:.2f}" if n in p["ms"] else "-" for n in names]
        cells += [p["best_peer"], f"{p['speedup_vs_best_peer'].get(ours, float('nan')):.2f}",
                  f"{p['copy_floor_ms']:.2f}", f"{p['ms'].get(ours, float('nan')) / p['copy_floor_ms']:.1f}",
                  f"{p['gemm_floor_ms']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes, short timing (smoke run)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, each a table")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", default=None, help=f"where to write the JSON (default {DEFAULT_JSON}, untracked)")
    out.add_argument("--update", action="store_true",
                     help=f"write the tracked {RESULTS_DIR}/hco_cpu_<machine class>.json of this machine")
    p.add_argument("--timer", default="auto", choices=["auto", "wall", "thread"],
                   help="auto: thread CPU time with 1 thread, wall clock with more; thread needs --threads 1")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timing per candidate and pass")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.timer == "thread" and threads != [1]:
        p.error("--timer thread measures one thread's CPU time; use it with --threads 1")
    machine = machine_info()
    json_path = (os.path.join(RESULTS_DIR, f"hco_cpu_{machine_class(machine)}.json") if args.update
                 else (args.json or DEFAULT_JSON))
    revision = git_revision()  # before the run writes its JSON (--update: a tracked file)
    steady = steady_allocator()
    dtype = getattr(torch, args.dtype)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.4)
    probe = (torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2))
    backends = [b for b in ("reference", "fft", "cpu") if b in vk.available_backends(*probe)]
    names = [OFFICIAL] + list(PEERS) + [b for b in backends if b != OFFICIAL]
    runs, saved_threads = [], torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            clock = clock_for(t, args.timer)
            peak = gemm_peak_gflops(clock, min_time)
            rows = []
            for shape in shapes:
                rows.append(bench_shape(shape, backends, dtype, min_time, clock, peak))
                f = rows[-1]["forward"]
                print(f"  {t} thr {shape}: fwd cpu x{f['speedup_vs_best_peer'].get('cpu', float('nan')):.2f} "
                      f"vs {f['best_peer']}", file=sys.stderr)
            runs.append({"threads": t, "clock": "thread" if clock is time.thread_time else "wall",
                         "gemm_peak_gflops": peak, "rows": rows})
    finally:
        torch.set_num_threads(saved_threads)
    payload = {"benchmark": "hco_kernels", "git": revision, "official": "reference (matmul-DCT: 4x conv1d + einsum)",
               "peers": [OFFICIAL] + list(PEERS), "machine": machine, "dtype": args.dtype,
               "command": "python benchmarks/bench_hco.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "load_average": os.getloadavg(), "steady_allocator": steady, "runs": runs}
    atomic_write_json(json_path, payload, indent=2)
    print(f"\nHCO {args.dtype} on {machine_label(machine)} (load average {payload['load_average'][0]:.1f}). "
          f"Peers: official matmul-DCT (reference), channels-last 4-matmul (matmul4), scipy dctn/idctn "
          f"(scipy); 'x best peer' = best peer time / our time. JSON: {json_path}")
    for run in runs:
        for pass_name in PASSES:
            print(f"\n{machine_label(machine)}, {run['threads']} thread(s), {run['clock']} clock, "
                  f"{pass_name.replace('_', '+')} (GEMM peak {run['gemm_peak_gflops']:.0f} GFLOP/s):\n")
            print(format_table(run["rows"], names, pass_name))
    return payload


if __name__ == "__main__":
    main()
