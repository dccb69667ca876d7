"""Fused linear benchmark: vHeat's linear layers as F.linear (+ F.gelu) vs oneDNN's fused
bias + GELU GEMM (vheat.models.fused_linear), interleaved in one run; prints a table with the
size rule's choice and writes JSON. The evidence behind ``fused_linear.worth_fusing``.

    python benchmarks/bench_linear.py [--batches 1,4,16] [--threads 1] [--json benchmarks/results/linear_cpu.json]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_hco import machine_info  # noqa: E402
from benchmarks.suite.measure import steady_allocator, time_paired  # noqa: E402
from vheat.models import fused_linear  # noqa: E402
from vheat.train.atomic import atomic_write_json  # noqa: E402

# vHeat-T at 224: (side, channels) per stage; per block Heat2D's linear (C -> 2C) and
# out_linear (C -> C), the MLP's fc1 + GELU (C -> 4C) and fc2 (4C -> C).
STAGES = [(56, 96), (28, 192), (14, 384), (7, 768)]


def layers(channels: int):
    c = channels
    return [("linear", c, 2 * c, "none"), ("out_linear", c, c, "none"), ("fc1+gelu", c, 4 * c, "gelu"), ("fc2", 4 * c, c, "none")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4,16", help="comma list of batch sizes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per candidate")
    p.add_argument("--json", default="benchmarks/results/linear_cpu.json")
    args = p.parse_args(argv)
    if not fused_linear.onednn_available():
        raise SystemExit("bench_linear: this torch build has no oneDNN (torch.backends.mkldnn); nothing to compare")
    torch.set_num_threads(args.threads)
    steady = steady_allocator()
    rows = []
    with torch.no_grad():
        for batch in [int(b) for b in args.batches.split(",") if b]:
            for stage, (side, c) in enumerate(STAGES, 1):
                m = batch * side * side
                for name, k, n, act in layers(c):
                    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
                    plain = (lambda: F.gelu(F.linear(x, w, b))) if act == "gelu" else (lambda: F.linear(x, w, b))
                    fused = lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, act, [], "none" if act == "gelu" else "")  # noqa: E731
                    ms = time_paired({"plain": plain, "fused": fused}, args.min_time, min_reps=5)
                    rows.append({"batch": batch, "stage": stage, "layer": name, "rows": m, "k": k, "n": n, "activation": act,
                                 "plain_ms": ms["plain"], "fused_ms": ms["fused"], "speedup": ms["plain"] / ms["fused"],
                                 "rule_fuses": fused_linear.worth_fusing(m, k, n, act)})
                    r = rows[-1]
                    print(f"  batch {batch} stage {stage} {name}: x{r['speedup']:.2f}", file=sys.stderr)
    chosen = sum(r["fused_ms"] if r["rule_fuses"] else r["plain_ms"] for r in rows)
    payload = {"benchmark": "fused_linear", "baseline": "F.linear (+ F.gelu)", "machine": machine_info(),
               "load_average": os.getloadavg(), "steady_allocator": steady, "rows": rows,
               "total_ms": {"plain": sum(r["plain_ms"] for r in rows), "fused": sum(r["fused_ms"] for r in rows),
                            "rule": chosen, "best": sum(min(r["plain_ms"], r["fused_ms"]) for r in rows)}}
    atomic_write_json(args.json, payload, indent=2)
    print(f"\nvHeat-T linear layers on {payload['machine']['cpu']} ({args.threads} threads, load average "
          f"{payload['load_average'][0]:.1f}); speedup = plain / fused, measured interleaved. JSON: {args.json}\n")
    print("| batch | stage | layer | rows x k x n | plain ms | fused ms | speedup | rule fuses |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['stage']} | {r['layer']} | {r['rows']}x{r['k']}x{r['n']} | {r['plain_ms']:.3f} | "
              f"{r['fused_ms']:.3f} | {r['speedup']:.2f} | {'yes' if r['rule_fuses'] else 'no'} |")
    t = payload["total_ms"]
    print(f"\nsum over the table: plain {t['plain']:.1f} ms, always fused {t['fused']:.1f} ms, "
          f"size rule {t['rule']:.1f} ms, best per row {t['best']:.1f} ms")
    return payload


if __name__ == "__main__":
    main()
