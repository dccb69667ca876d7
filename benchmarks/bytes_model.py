"""Bytes-moved model of the HCO: the fused Triton schedules vs the official matmul-DCT.

The Triton column is counted from the launch plans ``vheat_kernels.triton.hco`` runs
(made on meta tensors, so the model follows the code): each launch reads its input
tensors once and writes its outputs once, scratch between passes included as DRAM
traffic (an upper bound: part of it stays in L2). E and the cosine matrices are counted
once per launch (L2-resident across the batch), and the register-resident backward's
fp32 dE partials are written, then read by the host's fixed-order sum. Matmul-DCT is the
official formulation (``reference.hco_matmul_dct``: 4 conv1d + einsum, autograd for the
backward), one read and one write of the feature map per op: a lower bound for it.

    python benchmarks/bytes_model.py             # print the tables
    python benchmarks/bytes_model.py --update    # also rewrite docs/bytes_model.md
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

from vheat.train.atomic import atomic_write_text  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "bytes_model.md")
# vHeat-T stages at 224 x 224, batch 8, and Mask R-CNN at 800 x 1333 (vHeat-T dims), batch 2.
VHEAT_T_224_B8 = [(8, 56, 56, 96), (8, 28, 28, 192), (8, 14, 14, 384), (8, 7, 7, 768)]
DETECTION_T_B2 = [(2, 200, 334, 96), (2, 100, 167, 192), (2, 50, 84, 384), (2, 25, 42, 768)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEPTHS = (2, 2, 6, 2)  # vHeat-T: HCO calls per stage and forward pass
# Ridge points (FLOP per DRAM byte) for the intensity column's comparison, dense peaks:
# A100 SXM 80GB (2.04 TB/s): tf32 156 TFLOP/s (tf32x3: a third), bf16 312; H100 SXM
# (3.35 TB/s): tf32 495, bf16 989.
RIDGE = {"fp32": {"A100": 156e12 / 3 / 2.04e12, "H100": 495e12 / 3 / 3.35e12},
         "bf16": {"A100": 312e12 / 2.04e12, "H100": 989e12 / 3.35e12}}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _launch_traffic(launch) -> tuple[int, int]:
    """(DRAM bytes, FLOPs) of one launch of a plan."""
    a, c = launch.args, launch.consts
    first = launch.configs[0] if launch.configs else None
    k = launch.kernel
    if k == "hco_fwd":
        B, H, W, C = a["x_ptr"].shape
        elems = a["x_ptr"].numel()
        return _nbytes(a["x_ptr"]) + _nbytes(a["e_ptr"]) + _nbytes(a["y_ptr"]), elems * 4 * (c["HP"] + c["WP"])
    if k == "hco_bwd":
        dy, de = a["dy_ptr"], a["de_ptr"]
        b = _nbytes(dy) + _nbytes(a["e_ptr"]) * c["NEED_DX"] + _nbytes(dy) * c["NEED_DX"]
        b += (_nbytes(a["x_ptr"]) + _nbytes(de)) * c["NEED_DE"]
        transforms = 2 + 2 * c["NEED_DX"] + 2 * c["NEED_DE"]  # 1-D transforms, each of K = HP or WP
        return b, dy.numel() * transforms * (c["HP"] + c["WP"])
    if k == "hco_axis":
        Z, N, R = a["Z"], a["N"], a["R"]
        b = Z * N * R * (a["src_ptr"].element_size() + a["dst_ptr"].element_size()) + N * N * 4
        b += _nbytes(a["e_ptr"]) if c["HAS_E"] else 0
        padded = -(-N // first.BK) * first.BK
        return b, 2 * Z * N * R * padded
    if k == "hco_line":
        Z, N, R = a["Z"], a["N"], a["R"]
        return 2 * Z * N * R * a["src_ptr"].element_size() + _nbytes(a["e_ptr"]), 2 * 2 * Z * N * R * c["NP"]
    if k == "hco_line_bwd":
        g = a["g_ptr"]
        return 2 * _nbytes(g) + _nbytes(a["de_ptr"]), 2 * 2 * g.numel() * c["NP"]
    if k == "hco_de":
        g = a["g_ptr"]
        return 2 * _nbytes(g) + _nbytes(a["de_ptr"]) + (_nbytes(a["e_ptr"]) + _nbytes(g)) * c["SCALE_G"], 2 * g.numel()
    raise ValueError(f"no traffic model for kernel {k}")


@dataclass
class Traffic:
    schedule: str
    fwd: int
    bwd: int
    fwd_flops: int
    launches: tuple[int, int]
    matmul_fwd: int
    matmul_bwd: int
    matmul_flops: int


def schedule_name(hco, x) -> str:
    from vheat_kernels.triton import configs as cfg

    if hco.register_resident(x):
        return "register"
    side = cfg.line_side(x.shape[1], x.shape[2])
    return f"line {side}" if side else "4 passes"


def model(shape, dtype: torch.dtype) -> Traffic:
    from vheat_kernels.triton import hco

    B, H, W, C = shape
    x = torch.empty(shape, device="meta", dtype=dtype)
    E = torch.empty((H, W, C), device="meta")
    fwd_plan = hco.forward_plan(x, E, torch.empty_like(x))
    bwd_plan, de = hco.backward_plan(x, x, E, torch.empty_like(x), True, True)
    fwd = [_launch_traffic(launch) for launch in fwd_plan]
    bwd_bytes = sum(_launch_traffic(launch)[0] for launch in bwd_plan)
    if de.dim() == 4 and de.shape[0] > 1:
        bwd_bytes += _nbytes(de) + _nbytes(de[0])  # host sum of the chunk partials
    n = x.numel() * x.element_size()
    e = _nbytes(E)
    cos = (H * H + W * W) * 4
    # forward: 4 conv1d (read + write each) and the einsum (read + E + write)
    matmul_fwd = 4 * 2 * n + (2 * n + e) + cos
    # backward: 4 transposed conv1d (read + write), einsum grad to its input (read dy, E,
    # write) and to E (read dy and the saved einsum input, write dE)
    matmul_bwd = 4 * 2 * n + (2 * n + e) + (2 * n + e) + cos
    return Traffic(schedule_name(hco, x), sum(b for b, _ in fwd), bwd_bytes, sum(f for _, f in fwd),
                   (len(fwd_plan), len(bwd_plan)), matmul_fwd, matmul_bwd, x.numel() * 4 * (H + W))


def mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def render() -> str:
    ridge = "; ".join(f"{d}: A100 {r['A100']:.0f}, H100 {r['H100']:.0f}" for d, r in RIDGE.items())
    lines = [
        "# Bytes moved by the HCO: fused Triton schedules vs matmul-DCT",
        "",
        "Generated by `python benchmarks/bytes_model.py --update` (do not edit by hand).",
        "Channels-last (B, H, W, C), E in fp32, DRAM traffic per call in MiB. The Triton",
        "columns are counted from the launch plans the backend runs (`hco.forward_plan` /",
        "`backward_plan` on meta tensors; see docs/triton.md for the schedules): every launch",
        "reads its inputs once and writes its outputs once, the scratch between passes counted",
        "as DRAM traffic (an upper bound: some stays in L2), E and the cosine matrices once per",
        "launch, the register-resident backward's fp32 dE partials written and summed.",
        "Matmul-DCT is the official formulation (4 conv1d + einsum, autograd backward), one",
        "read and one write of the feature map per op: a lower bound for it.",
        "",
        "`launches` is forward / backward (both gradients). `FLOP/B` is the Triton forward's",
        "FLOPs (zero-padded tiles included) per byte it moves; the ridge points, dense peak",
        f"over DRAM bandwidth, are {ridge} (fp32 dots run as tf32x3: a third of the tf32 peak).",
        "",
    ]
    for title, shapes in (("vHeat-T stages at 224 x 224, batch 8", VHEAT_T_224_B8),
                          ("Mask R-CNN at 800 x 1333 (vHeat-T), batch 2", DETECTION_T_B2)):
        lines += [f"## {title}", "",
                  "| shape (B,H,W,C) | dtype | schedule | launches | triton fwd | matmul fwd | ratio | triton bwd "
                  "| matmul bwd | ratio | FLOP/B |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        totals = {}
        for dtype_name, dtype in DTYPES.items():
            for depth, shape in zip(DEPTHS, shapes):
                t = model(shape, dtype)
                lines.append(
                    f"| {shape} | {dtype_name} | {t.schedule} | {t.launches[0]} / {t.launches[1]} | {mib(t.fwd)} | "
                    f"{mib(t.matmul_fwd)} | {t.matmul_fwd / t.fwd:.2f}x | {mib(t.bwd)} | {mib(t.matmul_bwd)} | "
                    f"{t.matmul_bwd / t.bwd:.2f}x | {t.fwd_flops / t.fwd:.0f} |"
                )
                agg = totals.setdefault(dtype_name, [0, 0, 0, 0])
                for i, v in enumerate((t.fwd, t.matmul_fwd, t.bwd, t.matmul_bwd)):
                    agg[i] += depth * v
        if shapes is VHEAT_T_224_B8:
            lines += ["", "Per vHeat-T forward pass (HCO once per block, depths 2, 2, 6, 2):", "",
                      "| dtype | triton fwd MiB | matmul fwd MiB | triton bwd MiB | matmul bwd MiB |",
                      "|---|---:|---:|---:|---:|"]
            lines += [f"| {d} | " + " | ".join(mib(v) for v in agg) + " |" for d, agg in totals.items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help=f"also write {os.path.relpath(DOC)}")
    args = parser.parse_args()
    text = render()
    print(text)
    if args.update:
        atomic_write_text(os.path.abspath(DOC), text)
        print(f"wrote {os.path.abspath(DOC)}")


if __name__ == "__main__":
    main()
