"""Linear-layer benchmark: vHeat's linear layers as F.linear (+ F.gelu, MKL) vs oneDNN
(vheat.models.linear): inference with the fused bias + GELU, and a training pass
(forward + backward for x, weight and bias) through ``_OneDNNLinear``, interleaved in one run;
prints a table with what ``auto`` picks on this machine (its calibration) and writes JSON.
The evidence behind ``fused_linear.worth_fusing`` and ``ONEDNN_MARGIN``.

    python benchmarks/bench_linear.py [--batches 1,4,16] [--threads 1] [--json PATH | --update]

JSON goes to build/bench/linear_cpu.json unless --json says otherwise (--update: the tracked
benchmarks/results/linear_cpu.json).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.suite.measure import steady_allocator, time_paired  # noqa: E402
from vheat.io import atomic_write_json  # noqa: E402
from vheat.models import linear as fused_linear  # noqa: E402
from vheat_kernels.stages import stage_planes  # noqa: E402

# vHeat-T at 224: (side, channels) per stage; per block Heat2D's linear (C -> 2C) and
# out_linear (C -> C), the MLP's fc1 + GELU (C -> 4C) and fc2 (4C -> C).
STAGES = [(h, c) for h, _, c in stage_planes("T", 224)]


def layers(channels: int):
    c = channels
    return [("linear", c, 2 * c, "none"), ("out_linear", c, c, "none"), ("fc1+gelu", c, 4 * c, "gelu"), ("fc2", 4 * c, c, "none")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4,16", help="comma list of batch sizes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per candidate")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", default="build/bench/linear_cpu.json", help="where the JSON goes")
    out.add_argument("--update", action="store_true", help="write the tracked benchmarks/results/linear_cpu.json")
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
                    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
                    dy = torch.randn(m, n)

                    def train(fn):
                        with torch.enable_grad():
                            y = fn(xg, wg, bg)
                            y = F.gelu(y) if act == "gelu" else y
                            torch.autograd.backward(y, dy, inputs=[xg, wg, bg])
                    fns = {"plain": plain, "fused": fused, "plain_train": lambda: train(F.linear),
                           "onednn_train": lambda: train(fused_linear.OneDNNLinearFunction.apply)}
                    ms = time_paired(fns, args.min_time, min_reps=5)
                    rows.append({"batch": batch, "stage": stage, "layer": name, "rows": m, "k": k, "n": n, "activation": act,
                                 "plain_ms": ms["plain"], "fused_ms": ms["fused"], "speedup": ms["plain"] / ms["fused"],
                                 "plain_train_ms": ms["plain_train"], "onednn_train_ms": ms["onednn_train"],
                                 "train_speedup": ms["plain_train"] / ms["onednn_train"],
                                 "rule_fuses": fused_linear.worth_fusing(m, k, n, act)})
                    r = rows[-1]
                    print(f"  batch {batch} stage {stage} {name}: inference x{r['speedup']:.2f}, training x{r['train_speedup']:.2f}",
                          file=sys.stderr)
    calibration = fused_linear.calibration()
    everywhere = calibration["onednn_everywhere"]
    chosen = sum(r["fused_ms"] if r["rule_fuses"] else r["plain_ms"] for r in rows)
    payload = {"benchmark": "fused_linear", "baseline": "F.linear (+ F.gelu)", "machine": machine_info(),
               "load_average": os.getloadavg(), "steady_allocator": steady, "calibration": calibration, "rows": rows,
               "total_ms": {"plain": sum(r["plain_ms"] for r in rows), "fused": sum(r["fused_ms"] for r in rows),
                            "rule": chosen, "auto": sum(r["fused_ms"] for r in rows) if everywhere else chosen,
                            "best": sum(min(r["plain_ms"], r["fused_ms"]) for r in rows),
                            "plain_train": sum(r["plain_train_ms"] for r in rows),
                            "onednn_train": sum(r["onednn_train_ms"] for r in rows)}}
    if args.update:
        args.json = "benchmarks/results/linear_cpu.json"
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    atomic_write_json(args.json, payload, indent=2)
    print(f"\nvHeat-T linear layers on {payload['machine']['cpu']} ({args.threads} threads, load average "
          f"{payload['load_average'][0]:.1f}); speedup = plain / fused, measured interleaved. JSON: {args.json}\n")
    print(f"calibration: MKL / oneDNN = {calibration['speedup']:.2f}x (margin {fused_linear.ONEDNN_MARGIN}): auto uses "
          + ("oneDNN for every layer, training included\n" if everywhere else "oneDNN by the size rule, in inference only\n"))
    print("| batch | stage | layer | rows x k x n | plain ms | fused ms | speedup | rule fuses | train plain ms | train oneDNN ms | speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['stage']} | {r['layer']} | {r['rows']}x{r['k']}x{r['n']} | {r['plain_ms']:.3f} | "
              f"{r['fused_ms']:.3f} | {r['speedup']:.2f} | {'yes' if r['rule_fuses'] else 'no'} | "
              f"{r['plain_train_ms']:.3f} | {r['onednn_train_ms']:.3f} | {r['train_speedup']:.2f} |")
    t = payload["total_ms"]
    print(f"\nsum over the table, inference: plain {t['plain']:.1f} ms, always fused {t['fused']:.1f} ms, "
          f"size rule {t['rule']:.1f} ms, auto {t['auto']:.1f} ms, best per row {t['best']:.1f} ms; "
          f"training pass: plain {t['plain_train']:.1f} ms, oneDNN {t['onednn_train']:.1f} ms")
    return payload


if __name__ == "__main__":
    main()
