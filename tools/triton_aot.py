"""Ahead-of-time build of the fused-HCO kernels that vHeat's shapes run, sized by ``ptxas -v``.

No GPU needed. For each shape and dtype the launch plans of ``hco`` (the same code that
launches on a GPU) are made on meta tensors; every launch x every candidate configuration
(``Launch.configs``) becomes a build, specialised the way Triton's JIT specialises a real
launch (integer arguments equal to 1 become constants, multiples of 16 get
``tt.divisibility = 16``, torch's 16-byte aligned pointers too). ``triton.compile`` lowers
it to PTX for a ``GPUTarget``; ``ptxas -v`` with Triton's own flags reports registers and
spills, Triton's metadata the shared memory; occupancy follows from both. Used by
tools/triton_resources.py, benchmarks/bytes_model.py and tests/test_backend_triton_compile.py; a
build check, so it lives outside the installed package.
"""
from __future__ import annotations

import os
import pprint
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Optional

from vheat_kernels import stages
from vheat_kernels.triton import configs as cfg

ARCHS = (80, 90)
# Per SM: register file, shared memory, and the opt-in maximum one block may use (bytes).
SM_LIMITS = {
    80: dict(regs=65536, smem=164 * 1024, smem_block=163 * 1024, threads=2048, blocks=32),
    90: dict(regs=65536, smem=228 * 1024, smem_block=227 * 1024, threads=2048, blocks=32),
}
SMEM_LIMIT = {a: v["smem_block"] for a, v in SM_LIMITS.items()}
SMEM_RESERVED = 1024  # per block, sm_80 and later
DTYPES = ("fp32", "bf16", "fp16")
ELEM_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TORCH_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Backward variants (NEED_DX, NEED_DE): both, dx only (E frozen), dE only (x a leaf).
BWD_VARIANTS = ((True, True), (True, False), (False, True))
# Every kernel that runs one of these keeps at least this many warps resident per SM.
MIN_RESIDENT_WARPS = 8


# Batch of the builds per input size (a launch plan depends on B through its grid and the
# backward's batch chunking).
BATCH = {224: 8, 512: 2, 1024: 1}
DETECTION_BATCH = 2


def _batch(label: str) -> int:
    return DETECTION_BATCH if label.startswith("det ") else BATCH[int(label.rsplit("@", 1)[1])]


# (label, [(B, H, W, C) per stage]): the planes of vheat_kernels.stages.PLANES with a batch.
SHAPES = {label: [(_batch(label), *plane) for plane in planes] for label, planes in stages.PLANES.items()}
TARGET_SHAPES = ("T/S@224",)  # the resident-warps target applies to these


@dataclass(frozen=True)
class Build:
    """One compilation: a kernel with its runtime specialisation and constexprs."""

    kernel: str  # hco_fwd | hco_bwd | hco_plane | hco_plane_bwd | hco_de_sum | hco_axis | hco_de | hco_line | hco_line_bwd
    dtype: str
    arch: int
    signature: tuple  # ((name, type), ...), "constexpr" for specialised constants
    constexprs: tuple  # ((name, value), ...)
    attrs: tuple  # ((arg index, "D" or ""), ...)
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        c = dict(self.constexprs)
        show = {
            "hco_fwd": ("HP", "WP", "BC"),
            "hco_bwd": ("HP", "WP", "BC", "NEED_DX", "NEED_DE"),
            "hco_axis": ("BM", "BK", "TZ", "BN", "TRANSPOSE", "HAS_E"),
            "hco_de": ("SCALE_G", "BLOCK"),
            "hco_plane": ("HP", "WP", "BC", "TW", "TH", "BK"),
            "hco_plane_bwd": ("HP", "WP", "BC", "TW", "TH", "BK", "NEED_DX"),
            "hco_de_sum": ("BLOCK",),
            "hco_line": ("NP", "TZ", "BN"),
            "hco_line_bwd": ("NP", "TZ", "BN"),
        }[self.kernel]
        parts = [f"{k}={int(c[k]) if isinstance(c[k], bool) else c[k]}" for k in show if k in c]
        ints = [f"{n}={c[n]}" for n, t in self.signature if t == "constexpr" and n not in show and isinstance(c.get(n), int)
                and not isinstance(c.get(n), bool) and n not in ("NUM_STAGES", "ROUND_OUT")]
        return (f"{self.kernel[4:]} {self.dtype} {' '.join(parts + ints)} "
                f"w{self.num_warps}s{self.num_stages} sm_{self.arch}")


@dataclass
class Resources:
    build: Build
    registers: int
    spill_bytes: int  # spill stores + spill loads
    stack_bytes: int
    shared_bytes: int
    shapes: list = field(default_factory=list)  # "label BxHxWxC" of the shapes that run it

    @property
    def blocks_per_sm(self) -> int:
        """Resident blocks per SM, from registers (allocated per warp in units of 256),
        shared memory (plus 1 KiB reserved per block), threads and the block limit."""
        lim = SM_LIMITS[self.build.arch]
        warps = self.build.num_warps
        regs_per_warp = -(-max(self.registers, 1) * 32 // 256) * 256
        by_regs = (lim["regs"] // regs_per_warp) // warps
        by_smem = lim["smem"] // (self.shared_bytes + SMEM_RESERVED)
        return max(0, min(by_regs, by_smem, lim["threads"] // (32 * warps), lim["blocks"]))

    @property
    def resident_warps(self) -> int:
        return self.blocks_per_sm * self.build.num_warps

    @property
    def problems(self) -> list[str]:
        out = []
        if self.spill_bytes:
            out.append(f"{self.spill_bytes} bytes of register spills")
        limit = SMEM_LIMIT[self.build.arch]
        if self.shared_bytes > limit:
            out.append(f"shared memory {self.shared_bytes} B > {limit} B limit of sm_{self.build.arch}")
        if any(s.split(" ")[0] in TARGET_SHAPES for s in self.shapes) and self.resident_warps < MIN_RESIDENT_WARPS:
            out.append(f"{self.resident_warps} resident warps per SM < {MIN_RESIDENT_WARPS} (a vHeat-T stage at 224)")
        return out


# --- builds from launch plans -------------------------------------------------------------


def _hco():
    import triton

    if triton.knobs.runtime.interpret:
        raise RuntimeError("ahead-of-time compilation needs TRITON_INTERPRET unset (or 0)")
    from vheat_kernels.triton import hco

    hco.kernels()
    return hco


def _builds_of(launch, dtype: str, arch: int, configs=None) -> list[Build]:
    """One build per configuration of ``launch``, specialised like a real launch."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    hco = _hco()
    fn = getattr(hco._module_of(launch.kernel), launch.kernel + "_kernel")
    out = []
    for c in (configs if configs is not None else launch.configs) or [None]:
        extra, warps, stages = launch.config_kwargs(c) if c is not None else ({}, launch.num_warps, 1)
        values = {**launch.args, **launch.consts, **extra}
        signature, constexprs, attrs = [], [], []
        for i, p in enumerate(fn.params):
            v = values[p.name]
            if p.is_constexpr:
                signature.append((p.name, "constexpr"))
                constexprs.append((p.name, v))
                continue
            ty, spec = native_specialize_impl(BaseBackend, v, p.is_const, not p.do_not_specialize,
                                              not p.do_not_specialize_on_alignment)
            if ty == "constexpr":  # an integer equal to 1
                signature.append((p.name, "constexpr"))
                constexprs.append((p.name, spec))
            else:
                signature.append((p.name, ty))
                attrs.append((i, spec or ""))
        out.append(Build(launch.kernel, dtype, arch, tuple(signature), tuple(constexprs), tuple(attrs), warps, stages))
    return out


def _meta(shape, dtype: str):
    import torch

    B, H, W, C = shape
    x = torch.empty(shape, device="meta", dtype=getattr(torch, TORCH_DTYPE[dtype]))
    return x, torch.empty((H, W, C), device="meta")


def shape_builds(shape, dtype: str, arch: int, first_only: bool = False) -> list[Build]:
    """Every build the forward and the three backward variants may launch for one shape
    (``first_only``: the configuration each launch runs on ``arch``, ``Launch.chosen``)."""
    hco = _hco()
    x, E = _meta(shape, dtype)
    plans = [hco.forward_plan(x, E, x)]
    plans += [hco.backward_plan(x, x, E, x, *need)[0] for need in BWD_VARIANTS]
    out = []
    for plan in plans:
        for launch in plan:
            configs = [launch.chosen(arch)] if first_only and launch.configs else None
            out += [b for b in _builds_of(launch, dtype, arch, configs) if b not in out]
    return out


def every_build(archs: Iterable[int] = ARCHS, dtypes: Iterable[str] = DTYPES,
                labels: Iterable[str] = tuple(SHAPES), first_only: bool = False) -> dict[Build, list[str]]:
    """{build: shapes using it} over the shape table, deduplicated."""
    out: dict[Build, list[str]] = {}
    for label in labels:
        for shape in SHAPES[label]:
            for dtype in dtypes:
                for arch in archs:
                    for b in shape_builds(shape, dtype, arch, first_only):
                        out.setdefault(b, []).append(f"{label} {'x'.join(map(str, shape))}")
    return out


def quick_builds(archs: Iterable[int] = ARCHS) -> dict[Build, list[str]]:
    """vHeat-T's stages at 224 and the largest detection plane (200 x 334), fp32 and bf16,
    the configuration each launch runs."""
    out = every_build(archs, ("fp32", "bf16"), ("T/S@224",), first_only=True)
    shape = SHAPES["det T/S"][0]
    for dtype in ("fp32", "bf16"):
        for arch in archs:
            for b in shape_builds(shape, dtype, arch, first_only=True):
                out.setdefault(b, []).append(f"det T/S {'x'.join(map(str, shape))}")
    return out


# --- compile and size ---------------------------------------------------------------------


def find_ptxas() -> str:
    """ptxas of the CUDA toolkit next to nvcc (or on PATH), else the one Triton bundles."""
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(nvcc)), "ptxas"))
    candidates += [shutil.which("ptxas"), "/usr/local/cuda/bin/ptxas"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    import triton

    return triton.knobs.nvidia.ptxas.path


def _source(b: Build):
    from triton.backends.compiler import BaseBackend
    from triton.compiler import ASTSource

    hco = _hco()
    fn = getattr(hco._module_of(b.kernel), b.kernel + "_kernel")
    attrs = {(i,): BaseBackend.parse_attr(spec) for i, spec in b.attrs}
    return ASTSource(fn=fn, signature=dict(b.signature), constexprs=dict(b.constexprs), attrs=attrs)


def _sm(arch: int) -> str:
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"


def build(b: Build, ptxas: Optional[str] = None, shapes: Optional[list] = None) -> Resources:
    """Compile ``b`` to PTX and size it with ``ptxas -v``."""
    import triton
    from triton.backends.compiler import GPUTarget

    compiled = triton.compile(
        _source(b), target=GPUTarget("cuda", b.arch, 32), options={"num_warps": b.num_warps, "num_stages": b.num_stages}
    )
    ptxas = ptxas or find_ptxas()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        # Same flags as Triton's own ptxas call (backends/nvidia/compiler.py make_cubin).
        cmd = [ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={_sm(b.arch)}", src,
               "-o", os.path.join(tmp, "kernel.cubin")]
        run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"ptxas failed on {b.name}:\n{run.stderr}")
    return Resources(b, **parse_ptxas(run.stderr), shared_bytes=int(compiled.metadata.shared), shapes=list(shapes or []))


def parse_ptxas(log: str) -> dict:
    regs = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    if regs is None:
        raise RuntimeError(f"could not read the register count from ptxas output:\n{log}")
    return dict(
        registers=int(regs.group(1)),
        spill_bytes=int(stores.group(1) if stores else 0) + int(loads.group(1) if loads else 0),
        stack_bytes=int(stack.group(1)) if stack else 0,
    )


def table(rows: list[Resources]) -> str:
    width = max([len(r.build.name) for r in rows] + [10])
    head = (f"{'build':<{width}} {'regs':>5} {'spill B':>8} {'smem KiB':>9} {'blocks/SM':>9} {'warps/SM':>8}  "
            f"{'status':<6} first shape (of n)")
    lines = [head, "-" * len(head)]
    for r in rows:
        status = "; ".join(r.problems) or "ok"
        first = f"{r.shapes[0]} ({len(r.shapes)})" if r.shapes else ""
        lines.append(
            f"{r.build.name:<{width}} {r.registers:>5} {r.spill_bytes:>8} {r.shared_bytes / 1024:>9.1f} "
            f"{r.blocks_per_sm:>9} {r.resident_warps:>8}  {status:<6} {first}"
        )
    return "\n".join(lines)


def summary(rows: list[Resources]) -> str:
    """Per (kernel, arch): builds, worst registers / spills / shared memory, fewest warps."""
    groups: dict[tuple, list[Resources]] = {}
    for r in rows:
        groups.setdefault((r.build.kernel[4:], r.build.arch), []).append(r)
    head = f"{'kernel':<9} {'arch':>5} {'builds':>6} {'max regs':>8} {'spill B':>7} {'max smem KiB':>12} {'min warps/SM':>12} {'min blocks/SM':>13}"
    lines = [head, "-" * len(head)]
    for (kernel, arch), rs in sorted(groups.items()):
        lines.append(
            f"{kernel:<9} {'sm_' + str(arch):>5} {len(rs):>6} {max(r.registers for r in rs):>8} "
            f"{max(r.spill_bytes for r in rs):>7} {max(r.shared_bytes for r in rs) / 1024:>12.1f} "
            f"{min(r.resident_warps for r in rs):>12} {min(r.blocks_per_sm for r in rs):>13}"
        )
    return "\n".join(lines)


# --- sweep of register-resident candidates (regenerates spill_tables.SPILL_FREE) ---------


def sweep_builds(archs: Iterable[int] = ARCHS) -> list[Build]:
    """Candidate configurations of the register-resident kernels per padded plane.

    bf16 stands for both 16-bit types (same register footprint). Every backward variant
    is measured: the one computing both gradients is not always the hungriest. The
    shape is the padded plane itself, C = 64, B = 8.
    """
    hco = _hco()
    out = []
    for arch in archs:
        for dtype in ("bf16", "fp32"):
            for HP in cfg.PADDED_SIDES:
                for WP in cfg.PADDED_SIDES:
                    x, E = _meta((8, HP, WP, 64), dtype)
                    fwd = cfg.candidates(HP, WP, ELEM_BYTES[dtype], False)
                    bwd = cfg.candidates(HP, WP, ELEM_BYTES[dtype], True)
                    if fwd:
                        out += _builds_of(hco.forward_plan(x, E, x, resident=True)[0], dtype, arch, fwd)
                    for need in BWD_VARIANTS if bwd else ():
                        plan = hco.backward_plan(x, x, E, x, *need, resident=True)[0]
                        out += _builds_of(plan[0], dtype, arch, bwd)
    return out


def spill_free_table(rows: list[Resources]) -> dict:
    """{(kernel, elem_bytes, HP, WP): ((BC, warps), ...)} of sweep configs clean on every arch."""
    verdict: dict[tuple, bool] = {}
    for r in rows:
        b = r.build
        c = dict(b.constexprs)
        key = ("fwd" if b.kernel == "hco_fwd" else "bwd", ELEM_BYTES[b.dtype], c["HP"], c["WP"], c["BC"], b.num_warps)
        verdict[key] = verdict.get(key, True) and not r.problems
    out: dict[tuple, list] = {}
    for (kernel, eb, HP, WP, bc, nw), ok in sorted(verdict.items()):
        out.setdefault((kernel, eb, HP, WP), [])
        if ok:
            out[(kernel, eb, HP, WP)].append((bc, nw))
    return {k: tuple(v) for k, v in out.items()}


# --- sweep of plane-kernel candidates (regenerates spill_tables.PLANE_SPILLED) ------------


def plane_sweep_builds(archs: Iterable[int] = ARCHS, planes=None) -> list[Build]:
    """Every PLANE_TILES and PLANE_FALLBACK_TILES candidate of the plane kernels (forward,
    backward with and without dx) per padded plane, bf16 standing for both 16-bit types, C = 64, B = 8, on two planes
    per padded size: the padded plane itself and one 4 shorter per side (28 x 28 for 32 x 32):
    sides that are not multiples of 16 lose Triton's divisibility specialisation and
    compile differently (a candidate clean at 32 x 32 spilled at 28 x 28)."""
    hco = _hco()
    out = []
    planes = planes or [(HP, WP) for HP in cfg.PADDED_SIDES for WP in cfg.PADDED_SIDES]
    for arch in archs:
        for dtype in ("bf16", "fp32"):
            candidates = cfg.plane_candidates(ELEM_BYTES[dtype]) + cfg.plane_candidates(ELEM_BYTES[dtype], True)
            for HP, WP in planes:
                for H, W in ((HP, WP), (HP - 4, WP - 4)):
                    x, E = _meta((8, H, W, 64), dtype)
                    out += _builds_of(hco.forward_plan(x, E, x, schedule="plane")[0], dtype, arch, candidates)
                    for need_dx in (True, False):
                        plan = hco.backward_plan(x, x, E, x, need_dx, True, schedule="plane")[0]
                        out += _builds_of(plan[0], dtype, arch, candidates)
    return out


def plane_spilled_table(rows: list[Resources]) -> dict:
    """{(elem_bytes, HP, WP): ((BC, TW, TH, BK, warps), ...)} of candidates with a problem."""
    out: dict[tuple, set] = {}
    for r in rows:
        c = dict(r.build.constexprs)
        key = (ELEM_BYTES[r.build.dtype], c["HP"], c["WP"])
        out.setdefault(key, set())
        if r.spill_bytes or r.shared_bytes > SMEM_LIMIT[r.build.arch]:
            out[key].add((c["BC"], c["TW"], c["TH"], c["BK"], r.build.num_warps))
    return {k: tuple(sorted(v)) for k, v in sorted(out.items()) if v}


# --- the generated module vheat_kernels/triton/spill_tables.py ---------------------------


def table_literal(name: str, table: dict) -> str:
    return f"{name}: dict[tuple, tuple] = " + pprint.pformat(table, width=110, compact=True) + "\n"


def spill_tables_source(spill_free: dict, plane_spilled: dict) -> str:
    """The whole text of vheat_kernels/triton/spill_tables.py: its docstring (kept: it says
    what the tables hold and how each was made) and both tables."""
    from vheat_kernels.triton import spill_tables

    return (f'"""{spill_tables.__doc__}"""\nfrom __future__ import annotations\n\n'
            + table_literal("SPILL_FREE", spill_free) + "\n" + table_literal("PLANE_SPILLED", plane_spilled))
