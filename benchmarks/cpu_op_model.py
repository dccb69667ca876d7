"""Arithmetic and memory operations of the CPU kernel's forward, counted from the structure
of csrc/cpu/plane_kernels_impl.h (dct_line / dct4_split with dense blocks; lines of 16, 28, 32
and 56 points through the register tree reg_dct; the run sweeps of the 7x7 and 14x14 planes with
small_dct, of 28x28 and 56x56 with reg_dct), as the AVX2 build runs them, against a machine's
measured FMA and copy rates and a bench_hco JSON.

Counts are per point-vector (one plane point of 8 fp32 channels, one ymm): the four 1-D
transform passes and the multiply by E, each add, multiply or FMA one vector op; memory ops
are the vector loads and stores of the line passes (the small runs keep lines in registers).
The compute floor is all vector ops at the peak FMA rate (adds counted as FMAs), the copy
floor reading x and E and writing y once at the copy rate.

    python benchmarks/cpu_op_model.py FMA_GFLOPS COPY_GBS [bench_hco.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The rows of the bench_hco JSON this model sits beside.
from benchmarks.bench_hco import SHAPES  # noqa: E402

RECURSE_MIN = 8          # plane_kernels.h kRecurseMin
ROWS_PER_BLOCK = 3       # the AVX2 build's dense blocks (plane_kernels_avx2.cpp)
SMALL = ((7, 7), (14, 14))          # run sweeps with small_dct's dense recursion
TREE_RUNS = ((28, 28), (56, 56))    # run sweeps with reg_dct
REGISTER_LINES = (16, 28, 32, 56)   # lines_in_registers in the AVX2 build (64 too on AVX-512)


def dense(r: int):
    """(vector ops, memory ops) of an r x r dense block: inputs reloaded per row block."""
    return r * r, r * -(-r // ROWS_PER_BLOCK) + r


def tree_line(n: int) -> int:
    """Vector ops of reg_dct on n points (butterfly with its scalings, rotations, dense leaves)."""
    ne, no = (n + 1) // 2, n // 2
    half = n % 2 == 0 and n >= RECURSE_MIN
    quarter = half and no % 2 == 0
    ops = 2 * no + (no if half else 0) + (no if quarter else 0)
    ops += tree_line(ne) if half else ne * ne
    if quarter:
        h = no // 2
        ops += 4 * h + 2 * tree_line(h) + no
    else:
        ops += no * no
    return ops


def line(n: int):
    """(vector ops, memory ops) of one DCT-II (or DCT-III) line of n points."""
    if n in REGISTER_LINES:  # loaded once, stored once
        return tree_line(n), 2 * n
    ne, no = (n + 1) // 2, n // 2
    ops, mem = 4 * no, 4 * no + 2 * (n & 1)  # butterfly: add, sub and two scalings per pair
    recurse = n % 2 == 0 and n >= RECURSE_MIN
    a, m = line(n // 2) if recurse else dense(ne)
    ops, mem = ops + a, mem + m
    if recurse and no % 2 == 0:  # DCT-IV split: rotation, two quarter DCT-II, output butterfly
        h = no // 2
        a, m = line(h)
        ops += 4 * h + 2 + 4 * (h - 1) + 2 * a
        mem += 4 * h + 4 + 4 * (h - 1) + 2 * m
    else:
        a, m = dense(no)
        ops, mem = ops + a, mem + m
    return ops, mem


def small_line(n: int) -> int:
    ne, no = (n + 1) // 2, n // 2
    even = small_line(ne) if n % 2 == 0 and n >= RECURSE_MIN else ne * ne
    return 2 * no + even + no * no


def per_point(H: int, W: int):
    if (H, W) in SMALL:
        return 2 * small_line(W) / W + 2 * small_line(H) / H + 1, None
    if (H, W) in TREE_RUNS:
        return 2 * tree_line(W) / W + 2 * tree_line(H) / H + 1, None
    (aw, mw), (ah, mh) = line(W), line(H)
    return 2 * aw / W + 2 * ah / H + 1, 2 * mw / W + 2 * mh / H + 2


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fma_gflops", type=float, help="measured fp32 FMA peak of one thread, GFLOP/s")
    p.add_argument("copy_gbs", type=float, help="measured copy rate of one thread, GB/s (read + write)")
    p.add_argument("json", nargs="?", help="bench_hco JSON: its 1-thread forward times go beside the floors")
    args = p.parse_args(argv)
    ops_per_s = args.fma_gflops / 16 * 1e9  # one 8-lane FMA is 16 flops
    measured = {}
    if args.json:
        with open(args.json) as f:
            run = next(r for r in json.load(f)["runs"] if r["threads"] == 1)
        for r in run["rows"]:
            fwd = r["forward"]
            measured[tuple(r["shape"])] = (fwd["ms"]["cpu"], fwd["best_peer"], fwd["ms"][fwd["best_peer"]])
    print("| shape | vector ops / point | memory ops / point | compute floor ms | copy floor ms | cpu ms | cpu / compute floor "
          "| best peer ms | peer / compute floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, H, W, C in SHAPES:
        ops, mem = per_point(H, W)
        floor = ops * B * H * W * C / 8 / ops_per_s * 1e3
        copy = (2 * B + 1) * H * W * C * 4 / (args.copy_gbs * 1e9) * 1e3
        m = measured.get((B, H, W, C))
        cells = [f"{B}x{H}x{W}x{C}", f"{ops:.1f}", "-" if mem is None else f"{mem:.1f}", f"{floor:.2f}", f"{copy:.2f}"]
        cells += [f"{m[0]:.2f}", f"{m[0] / floor:.1f}", f"{m[1]} {m[2]:.2f}", f"{m[2] / floor:.1f}"] if m else ["-"] * 4
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
