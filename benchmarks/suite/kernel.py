"""Kernel section: every CPU backend vs the official matmul-DCT ('reference') on vHeat stage shapes.

Beside the official code, the peers a user could pick instead (benchmarks/peers.py: the
channels-last 4-matmul formulation and scipy's dctn/idctn) are timed in the same interleaved
rounds; each row names the best of them and the fused kernel's speedup over it.
Throughput is put against this machine's own ceilings measured in the same run: GFLOP/s
(matmul-DCT-equivalent flops) vs a large torch.matmul, GB/s (minimum traffic) vs a tensor copy.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Sequence, Tuple

import torch

import vheat_kernels as vk
from vheat_kernels import stages

from ..peers import PEERS, candidates
from .measure import time_paired


def stage_shapes(families: Sequence[str], resolutions: Sequence[int], batch_224: int) -> List[Tuple[str, int, int, Tuple[int, ...]]]:
    """(family, input res, stage, (B, H, W, C)) of every HCO plane of the models; batch 1 above 224."""
    out = []
    for fam in families:
        for res in resolutions:
            batch = batch_224 if res <= 224 else 1
            out += [(fam, res, i + 1, shape) for i, shape in enumerate(stages.stage_shapes(fam, res, batch))]
    return out


def matmul_dct_flops(shape: Sequence[int], fwd_bwd: bool) -> int:
    """Flops (2 per multiply-add) of the matmul-DCT: 4 cosine matmuls + scaling; backward = 2 more HCOs."""
    B, H, W, C = shape
    fwd = 2 * (2 * B * H * W * C * (H + W)) + B * H * W * C
    return 3 * fwd if fwd_bwd else fwd


def min_bytes(shape: Sequence[int], elem: int, fwd_bwd: bool) -> int:
    """Least traffic: read x, E and write y; backward also reads dy, x, E and writes dx, dE."""
    B, H, W, C = shape
    x, e = B * H * W * C * elem, H * W * C * 4
    return 2 * x + e + (3 * x + 2 * e if fwd_bwd else 0)


def cpu_backends() -> List[str]:
    probe = (torch.randn(1, 4, 4, 2), torch.rand(4, 4, 2))
    return [b for b in ("reference", "fft", "cpu") if b in vk.available_backends(*probe)]


def bench_plane(shape, dtype, backends, min_time, peaks) -> List[Dict]:
    x = torch.randn(shape, dtype=dtype)
    E = torch.rand(shape[1:], dtype=torch.float32)
    dy = torch.randn(shape, dtype=dtype)
    elem = x.element_size()
    pairs = candidates(x, E, dy, backends)
    rows = []
    for i, (pass_name, is_bwd) in enumerate((("forward", False), ("fwd+bwd", True))):
        every = time_paired({n: pair[i] for n, pair in pairs.items()}, min_time)
        ms = {b: every[b] for b in backends}
        peer_ms = {n: t for n, t in every.items() if n in PEERS}
        best = min(peer_ms.items() | {"reference": ms["reference"]}.items(), key=lambda kv: kv[1])
        flops, nbytes = matmul_dct_flops(shape, is_bwd), min_bytes(shape, elem, is_bwd)
        gflops = {b: flops / (t * 1e-3) / 1e9 for b, t in ms.items()}
        gbs = {b: nbytes / (t * 1e-3) / 1e9 for b, t in ms.items()}
        rows.append({
            "pass": pass_name, "ms": ms, "peer_ms": peer_ms, "best_peer": best[0],
            "speedup": {b: ms["reference"] / t for b, t in ms.items()},
            "speedup_vs_best_peer": {b: best[1] / t for b, t in ms.items()},
            "gflops": gflops, "pct_gemm_peak": {b: 100 * g / peaks["gemm_gflops"] for b, g in gflops.items()},
            "gbs": gbs, "pct_copy_bw": {b: 100 * g / peaks["copy_gbs"] for b, g in gbs.items()},
        })
    return rows


def run(cfg: Dict, peaks: Dict) -> Dict:
    backends = cpu_backends()
    rows = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(torch, dtype_name)
        for fam, res, stage, shape in stage_shapes(cfg["families"], cfg["kernel_resolutions"], cfg["kernel_batch"]):
            if res > cfg["kernel_max_res"].get(dtype_name, res) or res > cfg["kernel_max_res"].get(fam, res):
                continue  # keeps the run finite: the matmul-DCT grows as side^3
            for r in bench_plane(shape, dtype, backends, cfg["min_time"], peaks):
                rows.append({"family": fam, "input_res": res, "stage": stage, "shape": list(shape), "dtype": dtype_name, **r})
                print(f"  kernel {fam} {res} s{stage} {shape} {dtype_name} {r['pass']}: "
                      + ", ".join(f"{b} x{s:.2f}" for b, s in r["speedup"].items() if b != "reference"), file=sys.stderr)
    return {"backends": backends, "peers": list(PEERS), "baseline": "reference (official matmul-DCT: 4x conv1d + einsum)",
            "flops_note": "matmul-DCT-equivalent flops (2 per multiply-add); fwd+bwd = 3x forward",
            "bytes_note": "minimum traffic: fwd reads x, E and writes y; bwd adds dy, x, E reads and dx, dE writes",
            "rows": rows}


def table(section: Dict) -> str:
    backends = section["backends"]
    peers = section.get("peers", [])
    others = [b for b in backends if b != "reference"]
    head = ["family", "input", "stage", "shape", "dtype", "pass"] + [f"{b} ms" for b in backends]
    head += [f"{p} ms" for p in peers] + ["best peer"] * bool(peers) + [f"{b} x best peer" for b in others if peers]
    head += [f"{b} x" for b in others] + [f"{b} %GEMM" for b in backends] + [f"{b} %copy" for b in backends]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in section["rows"]:
        cells = [r["family"], str(r["input_res"]), str(r["stage"]), "x".join(map(str, r["shape"])), r["dtype"], r["pass"]]
        cells += [f"{r['ms'][b]:.2f}" for b in backends]
        if peers:
            cells += [f"{r['peer_ms'][p]:.2f}" if p in r["peer_ms"] else "-" for p in peers] + [r["best_peer"]]
            cells += [f"{r['speedup_vs_best_peer'][b]:.2f}" for b in others]
        cells += [f"{r['speedup'][b]:.2f}" for b in others]
        cells += [f"{r['pct_gemm_peak'][b]:.1f}" for b in backends] + [f"{r['pct_copy_bw'][b]:.1f}" for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
