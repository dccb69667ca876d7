"""Ahead-of-time build of every fused-HCO kernel configuration, sized by ``ptxas -v``.

No GPU needed: ``triton.compile`` lowers each (kernel, dtype, padded plane, block config)
to PTX for a ``GPUTarget``; ``ptxas -v`` (with Triton's own flags) then reports registers
and spills, and Triton's metadata the shared memory. Used by tests/test_triton_compile.py
and benchmarks/triton_resources.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterable, Optional

from . import configs as cfg

# Shared memory one block may use (opt-in maximum), bytes.
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = tuple(SMEM_LIMIT)
DTYPES = ("fp32", "bf16", "fp16")
ELEM_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Backward variants (NEED_DX, NEED_DE): both, dx only (E frozen), dE only (x a leaf).
BWD_VARIANTS = ((True, True), (True, False), (False, True))


@dataclass(frozen=True)
class Build:
    kernel: str  # "fwd" or "bwd"
    dtype: str
    HP: int
    WP: int
    config: cfg.BlockConfig
    arch: int
    need: tuple[bool, bool] = (True, True)

    @property
    def name(self) -> str:
        need = "" if self.kernel == "fwd" else "+dx" * self.need[0] + "+dE" * self.need[1]
        return (
            f"{self.kernel}{need} {self.dtype} {self.HP}x{self.WP} BC={self.config.BC} "
            f"warps={self.config.num_warps} sm_{self.arch}"
        )


@dataclass(frozen=True)
class Resources:
    build: Build
    registers: int
    spill_bytes: int  # spill stores + spill loads
    stack_bytes: int
    shared_bytes: int

    @property
    def problems(self) -> list[str]:
        out = []
        if self.spill_bytes:
            out.append(f"{self.spill_bytes} bytes of register spills")
        limit = SMEM_LIMIT[self.build.arch]
        if self.shared_bytes > limit:
            out.append(f"shared memory {self.shared_bytes} B > {limit} B limit of sm_{self.build.arch}")
        return out


def every_build(archs: Iterable[int] = ARCHS, dtypes: Iterable[str] = DTYPES) -> list[Build]:
    """Every kernel x dtype x padded plane x autotune configuration x arch the backend can launch."""
    out = []
    for arch in archs:
        for dtype in dtypes:
            for HP, WP, c in cfg.all_configs(ELEM_BYTES[dtype], backward=False):
                out.append(Build("fwd", dtype, HP, WP, c, arch))
            for need in BWD_VARIANTS:
                for HP, WP, c in cfg.all_configs(ELEM_BYTES[dtype], backward=True):
                    out.append(Build("bwd", dtype, HP, WP, c, arch, need))
    return out


def largest_builds(archs: Iterable[int] = ARCHS, dtypes: Iterable[str] = DTYPES) -> list[Build]:
    """Per (arch, kernel, dtype) the configs closest to the spill budget: a quick subset."""
    best: dict[tuple, Build] = {}
    for b in every_build(archs, dtypes):
        if b.kernel == "bwd" and b.need != (True, True):
            continue
        key = (b.arch, b.kernel, b.dtype)
        if key not in best or _load(b) > _load(best[key]):
            best[key] = b
    return list(best.values())


def _load(b: Build) -> tuple:
    return (cfg.per_thread(b.HP, b.WP, b.config), b.HP * b.WP, b.config.BC)


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


def _jit_kernels():
    import triton

    if triton.knobs.runtime.interpret:
        raise RuntimeError("ahead-of-time compilation needs TRITON_INTERPRET unset (or 0)")
    from . import hco

    return hco.kernels()


def _source(b: Build):
    import triton.language as tl
    from triton.compiler import ASTSource

    from . import hco

    k = _jit_kernels()
    torch_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[b.dtype]
    import torch

    consts = dict(HP=b.HP, WP=b.WP, BC=b.config.BC, **hco.dtype_constants(getattr(torch, torch_dtype), False))
    p = "*" + b.dtype
    if b.kernel == "fwd":
        fn = k.hco_fwd_kernel
        sig = {"x_ptr": p, "e_ptr": "*fp32", "ch_ptr": "*fp32", "cw_ptr": "*fp32", "y_ptr": p,
               "H": "i32", "W": "i32", "C": "i32"}
    else:
        fn = k.hco_bwd_kernel
        sig = {"x_ptr": p, "dy_ptr": p, "e_ptr": "*fp32", "ch_ptr": "*fp32", "cw_ptr": "*fp32", "dx_ptr": p,
               "de_ptr": "*fp32", "B": "i32", "H": "i32", "W": "i32", "C": "i32", "B_PER_PROG": "i32"}
        consts.update(NEED_DX=b.need[0], NEED_DE=b.need[1], NUM_STAGES=hco.BWD_STAGES)
    sig.update({name: "constexpr" for name in consts})
    # torch allocations are 16-byte aligned: launches specialise pointers the same way.
    n_ptrs = sum(1 for v in sig.values() if v.startswith("*"))
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(n_ptrs)}
    return ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)


def _sm(arch: int) -> str:
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"


def build(b: Build, ptxas: Optional[str] = None) -> Resources:
    """Compile ``b`` to PTX and size it with ``ptxas -v``."""
    import triton
    from triton.backends.compiler import GPUTarget

    compiled = triton.compile(
        _source(b), target=GPUTarget("cuda", b.arch, 32), options={"num_warps": b.config.num_warps, "num_stages": 1}
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
    return Resources(b, **parse_ptxas(run.stderr), shared_bytes=int(compiled.metadata.shared))


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
    head = f"{'build':<44} {'regs':>5} {'spill B':>8} {'stack B':>8} {'smem KiB':>9}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        status = "; ".join(r.problems) or "ok"
        lines.append(
            f"{r.build.name:<44} {r.registers:>5} {r.spill_bytes:>8} {r.stack_bytes:>8} "
            f"{r.shared_bytes / 1024:>9.1f}  {status}"
        )
    return "\n".join(lines)


def sweep_builds(archs: Iterable[int] = ARCHS) -> list[Build]:
    """Candidate configurations to measure when (re)generating ``configs.SPILL_FREE``.

    bf16 stands for both 16-bit types (same register footprint). Every backward variant
    is measured: the one computing both gradients is not always the hungriest (ptxas
    schedules the smaller ones differently). ``every_build`` later re-checks all builds.
    """
    out = []
    for arch in archs:
        for dtype in ("bf16", "fp32"):
            for backward in (False, True):
                for HP in cfg.PADDED_SIDES:
                    for WP in cfg.PADDED_SIDES:
                        for c in cfg.candidates(HP, WP, ELEM_BYTES[dtype], backward):
                            if backward:
                                out += [Build("bwd", dtype, HP, WP, c, arch, need) for need in BWD_VARIANTS]
                            else:
                                out.append(Build("fwd", dtype, HP, WP, c, arch))
    return out


def spill_free_table(rows: list[Resources]) -> dict:
    """{(kernel, elem_bytes, HP, WP): ((BC, warps), ...)} of sweep configs clean on every arch."""
    verdict: dict[tuple, bool] = {}
    for r in rows:
        b = r.build
        key = (b.kernel, ELEM_BYTES[b.dtype], b.HP, b.WP, b.config.BC, b.config.num_warps)
        verdict[key] = verdict.get(key, True) and not r.problems
    table: dict[tuple, list] = {}
    for (kernel, eb, HP, WP, bc, nw), ok in sorted(verdict.items()):
        table.setdefault((kernel, eb, HP, WP), [])
        if ok:
            table[(kernel, eb, HP, WP)].append((bc, nw))
    return {k: tuple(v) for k, v in table.items()}
