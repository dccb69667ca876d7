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
    python benchmarks/bytes_model.py --update    # also rewrite docs/bytes_model.md (sizes with ptxas)
                                                 # and vheat_kernels/auto_table.json (CUDA auto)
    python benchmarks/bytes_model.py --ptxas --measured out/gpu_check/results.jsonl
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

from vheat.io import atomic_write_text  # noqa: E402
from vheat_kernels import stages  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "bytes_model.md")
# vHeat-T stages at 224 x 224, batch 8, and Mask R-CNN at 800 x 1333 (vHeat-T dims), batch 2.
VHEAT_T_224_B8 = stages.stage_shapes("T", 224, 8)
DETECTION_T_B2 = [(2, *plane) for plane in stages.detection_planes("T")]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEPTHS = stages.VARIANTS["T"].depths  # HCO calls per stage and forward pass
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
    if k == "hco_plane":
        # x, E read once and y written once; the persistent programs' scratch slots (four
        # passes over each element: T written, the W line read and written, read back) stay
        # in L2 as far as the slots fit (`_l2_excess`).
        x = a["x_ptr"]
        scratch = 4 * x.numel() * a["s_ptr"].element_size()
        b = _nbytes(x) + _nbytes(a["e_ptr"]) + _nbytes(a["y_ptr"])
        return b + _l2_excess(scratch, _nbytes(a["s_ptr"])), x.numel() * 4 * (c["HP"] + c["WP"])
    if k == "hco_plane_bwd":
        # dy, x (and E, dx with NEED_DX) once; the chunk partials written once (their per
        # element read-modify-write and the two slots per program stay in L2 as far as they fit).
        dy, part = a["dy_ptr"], a["de_ptr"]
        b = _nbytes(dy) + _nbytes(a["x_ptr"]) + _nbytes(part) + (_nbytes(a["e_ptr"]) + _nbytes(dy)) * c["NEED_DX"]
        passes = 4 * (2 + c["NEED_DX"])  # slot passes per element: DCT2 of dy and of x, IDCT2 for dx
        on_chip = passes * dy.numel() * a["s_ptr"].element_size() + 2 * dy.numel() * part.element_size()
        held = _nbytes(a["s_ptr"]) + _nbytes(part)
        transforms = 4 + 2 * c["NEED_DX"]
        return b + _l2_excess(on_chip, held), dy.numel() * transforms * (c["HP"] + c["WP"])
    if k == "hco_de_sum":
        return _nbytes(a["part_ptr"]) + _nbytes(a["de_ptr"]), 0
    raise ValueError(f"no traffic model for kernel {k}")


def _l2_excess(traffic: int, held: int) -> int:
    """DRAM bytes of on-chip-meant traffic over a working set of ``held`` bytes: none while it
    fits the H100's L2, else the share of it that does not fit."""
    return 0 if held <= H100["l2_bytes"] else int(traffic * (1 - H100["l2_bytes"] / held))


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
    """The forward's schedule / the backward's (hco.schedule), with the streamed line axis."""
    from vheat_kernels.triton import configs as cfg

    def name(backward: bool) -> str:
        which = hco.schedule(x, backward)
        if which != "streamed":
            return which
        side = cfg.line_side(x.shape[1], x.shape[2])
        return f"line {side}" if side else "4 passes"

    fwd, bwd = name(False), name(True)
    return fwd if fwd == bwd else f"{fwd} / {bwd}"


def matmul_bytes(shape, dtype: torch.dtype) -> tuple[int, int]:
    """(forward, backward) DRAM bytes of the official matmul-DCT at ``shape`` (E in fp32):
    a lower bound, one read and one write of the feature map per op."""
    B, H, W, C = shape
    n = B * H * W * C * torch.empty((), dtype=dtype).element_size()
    e = H * W * C * 4
    cos = (H * H + W * W) * 4
    # forward: 4 conv1d (read + write each) and the einsum (read + E + write)
    fwd = 4 * 2 * n + (2 * n + e) + cos
    # backward: 4 transposed conv1d (read + write), einsum grad to its input (read dy, E,
    # write) and to E (read dy and the saved einsum input, write dE)
    return fwd, 4 * 2 * n + (2 * n + e) + (2 * n + e) + cos


def model(shape, dtype: torch.dtype) -> Traffic:
    from vheat_kernels.triton import hco

    B, H, W, C = shape
    x = torch.empty(shape, device="meta", dtype=dtype)
    E = torch.empty((H, W, C), device="meta")
    fwd_plan = hco.forward_plan(x, E, torch.empty_like(x))
    bwd_plan, _ = hco.backward_plan(x, x, E, torch.empty_like(x), True, True)
    fwd = [_launch_traffic(launch) for launch in fwd_plan]
    bwd_bytes = sum(_launch_traffic(launch)[0] for launch in bwd_plan)
    matmul_fwd, matmul_bwd = matmul_bytes(shape, dtype)
    return Traffic(schedule_name(hco, x), sum(b for b, _ in fwd), bwd_bytes, sum(f for _, f in fwd),
                   (len(fwd_plan), len(bwd_plan)), matmul_fwd, matmul_bwd, x.numel() * 4 * (H + W))


# --- roofline: a predicted H100 time per launch ---------------------------------------------
#
# Dense peaks of an H100 SXM (the GPU `make gpu-check` runs on): HBM3 3.35 TB/s; tensor cores
# 989 TFLOP/s for bf16 / fp16, 495 for tf32, of which fp32's tf32x3 (three tf32 products per
# fp32 product) gets a third. A launch takes at least the longer of its DRAM bytes over the
# bandwidth and its MMA FLOPs over the peak; the MMA time is divided by the share of SM
# slots its last wave fills (a grid of 1.2 waves holds the tensor cores for two); every
# launch pays a fixed start-up. It is a model (no GPU was measured): `make gpu-check`
# prints measured times beside it.
H100 = dict(sms=132, hbm_bytes_per_s=3.35e12, launch_s=3e-6, l2_bytes=50 * 2**20,
            mma_flops_per_s={"fp32": 495e12 / 3, "bf16": 989e12, "fp16": 989e12})


@dataclass
class LaunchCost:
    kernel: str
    bytes: int
    flops: int
    programs: int
    blocks_per_sm: Optional[int]  # from ptxas; None when not sized
    resident_warps: Optional[int]

    def predicted_s(self, dtype: str, gpu: dict = H100) -> float:
        t_mem = self.bytes / gpu["hbm_bytes_per_s"]
        t_mma = self.flops / gpu["mma_flops_per_s"][dtype]
        if self.blocks_per_sm:
            slots = gpu["sms"] * self.blocks_per_sm
            waves = -(-self.programs // slots)
            t_mma /= self.programs / (waves * slots)
        return max(t_mem, t_mma) + gpu["launch_s"]


def _programs(launch) -> int:
    grid = launch.grid(launch.chosen(90) if launch.configs else None)
    n = 1
    for g in grid:
        n *= int(g)
    return n


def launch_costs(plan, dtype: str, occupancy: bool) -> list[LaunchCost]:
    """Cost of each launch of a plan (meta tensors); ``occupancy`` sizes the configuration
    each launch runs on sm_90 with ptxas (tools/triton_aot.py) for its resident blocks."""
    out = []
    for launch in plan:
        b, f = _launch_traffic(launch)
        bps = warps = None
        if occupancy:
            from tools import triton_aot as aot

            chosen = [launch.chosen(90)] if launch.configs else None
            res = aot.build(aot._builds_of(launch, dtype, 90, chosen)[0])
            bps, warps = res.blocks_per_sm, res.resident_warps
        out.append(LaunchCost(launch.kernel, b, f, _programs(launch), bps, warps))
    return out


TRAINING_BATCH = 128  # the per-GPU batch of vHeat's ImageNet recipe
ROOFLINE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def classification_planes() -> list[tuple[str, tuple]]:
    """(model, (B, H, W, C)) of every vHeat-T/S and -B stage at 224 x 224, training batch."""
    return [(fam, shape) for fam in stages.FAMILIES for shape in stages.stage_shapes(fam, 224, TRAINING_BATCH)]


@dataclass
class PassRoofline:
    costs: list  # LaunchCost per launch
    single_pass: int  # bytes of one read of each input and one write of each output
    matmul_bytes: int  # the 4-matmul (official matmul-DCT) formulation's lower bound
    dtype: str

    @property
    def launches(self) -> int:
        return len(self.costs)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.costs)

    @property
    def predicted_s(self) -> float:
        return sum(c.predicted_s(self.dtype) for c in self.costs)

    @property
    def min_warps(self) -> Optional[int]:
        warps = [c.resident_warps for c in self.costs if c.resident_warps is not None]
        return min(warps) if warps else None

    def floor_s(self, nbytes: int) -> float:
        return nbytes / H100["hbm_bytes_per_s"]


def roofline(shape, dtype: str, occupancy: bool = False) -> dict[str, PassRoofline]:
    """Forward and backward (both gradients) of the Triton backend at ``shape``."""
    from vheat_kernels.triton import hco

    B, H, W, C = shape
    x = torch.empty(shape, device="meta", dtype=ROOFLINE_DTYPES[dtype])
    E = torch.empty((H, W, C), device="meta")
    n, e = _nbytes(x), _nbytes(E)
    fwd_plan = hco.forward_plan(x, E, torch.empty_like(x))
    bwd_plan, _ = hco.backward_plan(x, x, E, torch.empty_like(x), True, True)
    bwd = launch_costs(bwd_plan, dtype, occupancy)
    matmul_fwd, matmul_bwd = matmul_bytes(shape, ROOFLINE_DTYPES[dtype])
    return {
        "fwd": PassRoofline(launch_costs(fwd_plan, dtype, occupancy), 2 * n + e, matmul_fwd, dtype),
        # read dy, x and E, write dx and dE
        "bwd": PassRoofline(bwd, 3 * n + 2 * e, matmul_bwd, dtype),
    }


@functools.lru_cache(maxsize=None)
def cuda_plans(shapes: tuple) -> dict:
    """{(shape, dtype, op): cuda_resources.LaunchPlan} of the CUDA backend on sm_90: what
    csrc/cuda/hco_plan.h asks for (cuda_resources compiles it into a small host program),
    bf16's plan serving fp16 too."""
    from tools import cuda_resources

    rows = cuda_resources.launch_plans(archs=("90",), shapes=list(shapes))
    return {(tuple(r.shape), r.dtype, r.op): r for r in rows if r.path == "fused"}


def cuda_roofline(shape, dtype: str) -> Optional[dict[str, PassRoofline]]:
    """Forward and backward (dx and dE) of the CUDA backend's fused kernels at ``shape``
    from its launch plan; None where it takes the multi-pass line path. Resident blocks
    per SM come from threads and shared memory (registers are not counted: no nvcc build
    here; tools/cuda_resources.py reports them)."""
    from tools import cuda_resources

    plans = cuda_plans(tuple(tuple(s) for _, s in classification_planes()))
    key = "bf16" if dtype == "fp16" else dtype
    fwd, bwd = plans.get((tuple(shape), key, "forward")), plans.get((tuple(shape), key, "backward"))
    if fwd is None or bwd is None:
        return None
    B, H, W, C = shape
    n = B * H * W * C * torch.empty((), dtype=ROOFLINE_DTYPES[dtype]).element_size()
    e = H * W * C * 4  # E in fp32
    # MMA tiles are 16 wide (m16n8k16 / k8 for tf32): each 1-D transform pads its side to 16.
    pad = lambda v: -(-v // 16) * 16
    transform = B * H * W * C * 2 * (pad(H) + pad(W))  # one 2-D DCT: FLOPs over the tensor

    def cost(p, nbytes, flops, name):
        bps = min(cuda_resources.SMEM_PER_SM["90"] // (p.smem + cuda_resources.SMEM_RESERVED_PER_BLOCK),
                  2048 // p.threads)
        return LaunchCost(name, nbytes, flops, p.blocks, bps, bps * (-(-p.threads // 32)))

    fwd_costs = [cost(fwd, 2 * n + e, 2 * transform, "hco_fused_forward")]
    plane = H * W * C
    chunks = bwd.blocks // -(-C // bwd.kernel_tc)
    partials = chunks * plane * 4 if bwd.launches > 1 else e  # fp32 partials, or dE itself
    bwd_costs = [cost(bwd, 3 * n + e + partials, 4 * transform, "hco_fused_backward")]
    if bwd.launches > 1:  # the fixed-order sum of the chunk partials (elementwise, memory bound)
        bwd_costs.append(LaunchCost("sum_chunks", partials + e, 0, 0, None, None))
    matmul_fwd, matmul_bwd = matmul_bytes(shape, ROOFLINE_DTYPES[dtype])
    return {"fwd": PassRoofline(fwd_costs, 2 * n + e, matmul_fwd, dtype),
            "bwd": PassRoofline(bwd_costs, 3 * n + 2 * e, matmul_bwd, dtype)}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def render_roofline(occupancy: bool, measured: dict) -> list[str]:
    lines = [
        f"## Roofline: vHeat classification planes at 224 x 224, batch {TRAINING_BATCH}, H100 SXM model",
        "",
        "Per HCO call, for each fused GPU backend. `MiB` is the launches' DRAM traffic, `x one pass`",
        "that over one read of each input and one write of each output (forward: x, E -> y;",
        "backward: dy, x, E -> dx, dE), `warps/SM` the fewest resident warps per SM among the",
        "launches (triton: ptxas, sm_90" + ("" if occupancy else ", not sized in this run")
        + "; cuda: threads and shared memory of its plan), `predicted` the roofline time (see the",
        "module docstring), `HBM floor` one pass at 3.35 TB/s, `4-matmul floor` the official",
        "matmul-DCT's bytes at 3.35 TB/s (what cuBLAS could reach at best). The triton plane",
        "kernels' scratch slots are assumed L2-resident (not DRAM). `measured` comes from",
        "`make gpu-check`'s results.jsonl (`--measured`); empty where no GPU has run.",
        "",
    ]
    rooflines = {"triton": lambda shape, dtype: roofline(shape, dtype, occupancy), "cuda": cuda_roofline}
    for pass_name, title in (("fwd", "Forward"), ("bwd", "Backward (dx and dE)")):
        lines += [f"### {title}", "",
                  "| backend | model | shape (B,H,W,C) | dtype | launches | MiB | x one pass | GFLOP | warps/SM "
                  "| predicted us | HBM floor us | 4-matmul floor us | measured us |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for backend, of in rooflines.items():
            for label, shape in classification_planes():
                for dtype in ROOFLINE_DTYPES:
                    both = of(shape, dtype)
                    if both is None:
                        continue
                    r = both[pass_name]
                    warps = "" if r.min_warps is None else str(r.min_warps)
                    ms = measured.get((tuple(shape), dtype, pass_name, backend))
                    seen = "" if ms is None else f"{ms * 1e3:.0f}"
                    lines.append(
                        f"| {backend} | {label} | {shape} | {dtype} | {r.launches} | {mib(r.bytes)} | "
                        f"{r.bytes / r.single_pass:.2f}x | {sum(c.flops for c in r.costs) / 1e9:.1f} | {warps} | "
                        f"{us(r.predicted_s)} | {us(r.floor_s(r.single_pass))} | {us(r.floor_s(r.matmul_bytes))} | "
                        f"{seen} |")
        lines.append("")
    return lines

def mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def render(occupancy: bool = False, measured: Optional[dict] = None) -> str:
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
    lines += render_roofline(occupancy, measured or {})
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


def measured_times(path: str) -> dict:
    """{(shape, dtype, pass, candidate): ms} from `make gpu-check`'s results.jsonl (its timing
    step records forward and forward + backward; backward is the difference)."""
    rows = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if r.get("step") == "timing" and "ms" in r and "shape" in r:
                rows[(tuple(r["shape"]), r["dtype"], r["pass_"], r["candidate"])] = r["ms"]
    out = {}
    for (shape, dtype, pass_, who), ms in rows.items():
        if pass_ == "forward":
            out[(shape, dtype, "fwd", who)] = ms
            both = rows.get((shape, dtype, "fwd_bwd", who))
            if both is not None:
                out[(shape, dtype, "bwd", who)] = both - ms
    return out


# gpu-check's timing candidates -> dispatch backends ("4-matmul" is the reference backend's
# formulation, reference.hco_matmul4).
MEASURED_AS = {"triton": "triton", "cuda": "cuda", "4-matmul": "reference"}


def auto_entries(measured: dict) -> dict:
    """The CUDA auto table (vheat_kernels/auto_table.json): per (dtype, plane, pass) the
    backend with the least time summed over the classification shapes of that plane:
    measured times where `make gpu-check` timed every candidate, else the roofline
    (triton from its plans; reference at its 4-matmul floor, its best case)."""
    from vheat_kernels.dispatch import auto_table_key

    totals: dict = {}
    for _, shape in classification_planes():
        B, H, W, C = shape
        for dtype in ROOFLINE_DTYPES:
            r = roofline(shape, dtype)
            model_s = {p: {"triton": r[p].predicted_s, "reference": r[p].floor_s(r[p].matmul_bytes)} for p in r}
            cuda = cuda_roofline(shape, dtype)
            if cuda is not None:
                for p in model_s:
                    model_s[p]["cuda"] = cuda[p].predicted_s
            for training in (False, True):
                passes = ("fwd", "bwd") if training else ("fwd",)
                seen = {who: sum(measured.get((shape, dtype, p, m), float("nan")) * 1e-3 for p in passes)
                        for m, who in MEASURED_AS.items()}
                seen = {who: t for who, t in seen.items() if t == t}
                times = seen if len(seen) == len(MEASURED_AS) else {
                    who: sum(model_s[p][who] for p in passes) for who in model_s["fwd"]}
                key = auto_table_key(ROOFLINE_DTYPES[dtype], H, W, training)
                entry = totals.setdefault(key, {"source": "measured" if times is seen else "roofline", "us": {}})
                for who, t in times.items():
                    entry["us"][who] = entry["us"].get(who, 0.0) + t * 1e6
    return {key: dict(backend=min(e["us"], key=e["us"].get), source=e["source"],
                      us={k: round(v, 1) for k, v in e["us"].items()}) for key, e in sorted(totals.items())}


def write_auto_table(measured: dict) -> str:
    from vheat_kernels.dispatch import AUTO_TABLE_FILE

    entries = auto_entries(measured)
    doc = {
        "generated_by": "python benchmarks/bytes_model.py --update [--measured results.jsonl]",
        "entries": {k: e["backend"] for k, e in entries.items()},
        "basis": {k: {"source": e["source"], "us": e["us"]} for k, e in entries.items()},
    }
    atomic_write_text(str(AUTO_TABLE_FILE), json.dumps(doc, indent=1) + "\n")
    return str(AUTO_TABLE_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help=f"also write {os.path.relpath(DOC)}")
    parser.add_argument("--ptxas", action="store_true",
                        help="size each launch with ptxas (sm_90) for the warps/SM column and the wave model")
    parser.add_argument("--measured", metavar="RESULTS_JSONL",
                        help="fill the measured column from make gpu-check's results.jsonl")
    args = parser.parse_args()
    measured = measured_times(args.measured) if args.measured else {}
    text = render(args.ptxas or args.update, measured)
    print(text)
    if args.update:
        atomic_write_text(os.path.abspath(DOC), text)
        print(f"wrote {os.path.abspath(DOC)}")
        print(f"wrote {write_auto_table(measured)}")

if __name__ == "__main__":
    main()
