"""Resolution scaling: batch-1 inference of vHeat-T (fused and official) vs Swin-T and DeiT-S.

Per input size: time (candidates interleaved), fvcore FLOPs (multiply-adds, as papers
report them) and the peak resident memory the forward adds.
"""
from __future__ import annotations

import copy
import statistics
import sys
from typing import Dict, Optional, Tuple

import torch

from vheat.flops import DENSE_OPS, count_flops_by_operator, flop_analysis

from . import models
from .measure import peak_rss_delta_mb, time_paired

MEMORY_ROUNDS = 3


def count_gflops(model, img_size: int) -> Tuple[float, Optional[float]]:
    """Inference GFLOPs of the model and, for vHeat, of its dense (convolution and linear) layers
    (vHeat: infer mode, the same count whichever HCO backend runs)."""
    model.eval()
    if hasattr(model, "set_infer_mode"):
        ops = count_flops_by_operator(copy.deepcopy(model).set_infer_mode(True), img_size)  # the original stays for the candidates
        return sum(ops.values()) / 1e9, sum(n for op, n in ops.items() if op in DENSE_OPS) / 1e9
    with torch.no_grad():
        return flop_analysis(model, (torch.zeros(1, 3, img_size, img_size),)).total() / 1e9, None


def run(cfg: Dict, peaks: Dict) -> Dict:
    rows = []
    for res in cfg["resolutions"]:
        x = torch.randn(1, 3, res, res)
        fns, gflops, dense, mem = {}, {}, {}, {}
        for name in cfg["resolution_models"]:
            model = models.create(name, res, cfg["num_classes"])
            model_gflops, model_dense = count_gflops(model, res)
            for label, (runner, backend) in models.candidates(name, model).items():
                gflops[label] = model_gflops
                if model_dense is not None:
                    dense[label] = model_dense
                fns[label] = models.infer_step(runner, backend, x)
        for fn in fns.values():
            fn()  # first call apart: one-time caches (folded E, cosine tables) are not a forward's memory
        # Median of 3 interleaved measurements: what glibc's heap holds from the candidate before
        # moves a single peak by tens of MB (vHeat-T at 1024: 336-369 MB fused, 360-450 MB matmul-DCT).
        for label, fn in [item for _ in range(MEMORY_ROUNDS) for item in fns.items()]:
            mem.setdefault(label, []).append(peak_rss_delta_mb(fn))
        mem = {label: statistics.median(v) for label, v in mem.items()}
        ms = time_paired(fns, cfg["min_time"], min_reps=cfg["model_reps"], max_reps=cfg["model_reps"] + 2, warm_up=0)
        for label in fns:
            rows.append({"model": label, "img_size": res, "ms": ms[label], "gflops": gflops[label], "peak_mb": mem[label],
                         **({"dense_gflops": dense[label]} if label in dense else {})})
        print(f"  resolution {res}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()), file=sys.stderr)
        del fns
    return {"rows": rows, "note": "batch 1, inference; GFLOPs = fvcore multiply-adds (HCO counted as the "
                                  "official matmul-DCT; dense_gflops: convolutions and linear layers only); peak_mb = peak RSS a forward adds after one warm-up call, median of 3 (VmHWM after reset)"}


def table(section: Dict) -> str:
    lines = ["| input | model | ms | GFLOPs | peak MB |", "|---|---|---|---|---|"]
    for r in section["rows"]:
        lines.append(f"| {r['img_size']} | {r['model']} | {r['ms']:.1f} | {r['gflops']:.2f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)
