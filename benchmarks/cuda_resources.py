"""Resource report of the CUDA HCO kernels without a GPU.

1. Compiles csrc/cuda/hco_cuda_kernels.cu with nvcc for sm_80 and sm_90 and ``-Xptxas -v``
   and tabulates registers, spills, stack and static shared memory per kernel.
2. Compiles a tiny host program around csrc/cuda/hco_plan.h (the launch planner the op
   uses) and tabulates the dynamic shared memory, channels per block and threads it asks
   for on vHeat's shapes, per architecture limit.

Problems (exit code 1 with --check): any spill or stack frame, more than 128 registers
(kernels promise two resident blocks of 256 threads), static shared memory above 48 KiB,
dynamic shared memory above the architecture's opt-in per-block limit.

    python benchmarks/cuda_resources.py [--arch 80 90] [--check] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vheat.train.atomic import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS_CU = ROOT / "csrc" / "cuda" / "hco_cuda_kernels.cu"
ARCHS = ("80", "90")
# Opt-in dynamic shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin).
SMEM_OPTIN = {"80": 163 * 1024, "90": 227 * 1024}
STATIC_SMEM_LIMIT = 48 * 1024
MAX_REGISTERS = 128  # __launch_bounds__(256, 2)
MAX_THREADS = 256
# (B, H, W, C): vHeat-T stages at 224 px, odd / 1-wide planes, a detection-size stage 1,
# the largest fused plane, and the longest supported axis.
PLAN_SHAPES = [
    (128, 56, 56, 96), (128, 28, 28, 192), (128, 14, 14, 384), (128, 7, 7, 768),
    (3, 1, 9, 5), (2, 31, 29, 7), (2, 200, 304, 96), (1, 110, 110, 8), (1, 8192, 8192, 1),
]


@dataclasses.dataclass
class KernelResources:
    arch: str
    kernel: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    static_smem: int

    def problems(self) -> list[str]:
        out = []
        if self.spill_stores or self.spill_loads or self.stack_bytes:
            out.append(f"spills ({self.spill_stores} B stores, {self.spill_loads} B loads, {self.stack_bytes} B stack)")
        if self.registers > MAX_REGISTERS:
            out.append(f"{self.registers} registers > {MAX_REGISTERS}")
        if self.static_smem > STATIC_SMEM_LIMIT:
            out.append(f"static shared memory {self.static_smem} B > {STATIC_SMEM_LIMIT} B")
        return out


@dataclasses.dataclass
class LaunchPlan:
    arch: str
    shape: tuple
    acc_bytes: int
    op: str
    path: str
    kernel_tc: int
    threads: int
    smem: int
    blocks: int

    def problems(self) -> list[str]:
        out = []
        if self.kernel_tc <= 0:
            out.append("no channel tile fits in shared memory")
        if self.smem > SMEM_OPTIN[self.arch]:
            out.append(f"dynamic shared memory {self.smem} B > sm_{self.arch} limit {SMEM_OPTIN[self.arch]} B")
        if not 0 < self.threads <= MAX_THREADS:
            out.append(f"{self.threads} threads per block")
        return out


def find_nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _include_flags() -> list[str]:
    import torch

    site = Path(torch.__file__).resolve().parents[1]
    dirs = [ROOT / "csrc", site / "torch" / "include"] + sorted(site.glob("nvidia/cu*/include"))
    return [f"-I{d}" for d in dirs]


def compile_ptxas_log(archs=ARCHS, nvcc: str | None = None) -> str:
    """nvcc -c of the kernels file for each arch with -Xptxas -v; returns the report."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set CUDA_HOME to the CUDA toolkit")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-c", str(KERNELS_CU), "-o", os.path.join(tmp, "k.o"), "-std=c++20", "-O3", "--use_fast_math",
               "--expt-relaxed-constexpr", "-DNDEBUG", "-Xptxas=-v", *gencode, *_include_flags()]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def check_op_wrapper_compiles(cxx: str = "g++") -> None:
    """g++ -fsyntax-only of csrc/cuda/hco_cuda.cpp (the ATen op) against torch's CUDA headers."""
    import torch
    from torch.utils.cpp_extension import include_paths

    nvcc = find_nvcc()
    cuda_include = [f"-I{Path(nvcc).resolve().parents[1] / 'include'}"] if nvcc else []
    flags = [f"-I{p}" for p in include_paths()] + _include_flags() + cuda_include
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    cmd = [cxx, "-fsyntax-only", "-std=c++20", abi, "-DVHEAT_WITH_CUDA", *flags, str(ROOT / "csrc" / "cuda" / "hco_cuda.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hco_cuda.cpp does not compile:\n{proc.stderr[-4000:]}")


def _demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    # Template kernels demangle with their return type ("void name<float>(...)"): keep the name.
    short = [re.sub(r"^void ", "", re.sub(r"\(.*\)$", "", o)).replace("vheat::cuda::", "").replace("c10::", "")
             for o in out]
    return dict(zip(names, short))


def parse_ptxas(log: str) -> list[KernelResources]:
    """One row per (arch, kernel) from a ``ptxas -v`` report."""
    rows, current = [], None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line)
        if m:
            current = KernelResources(m.group(2), m.group(1), -1, 0, 0, 0, 0)
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.stack_bytes, current.spill_stores, current.spill_loads = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current.registers = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current.static_smem = int(s.group(1)) if s else 0
    if not rows or any(r.registers < 0 for r in rows):
        raise RuntimeError("could not find a register count for every kernel in the ptxas report")
    names = _demangle(sorted({r.kernel for r in rows}))
    for r in rows:
        r.kernel = names[r.kernel]
    return rows


_PLAN_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include "cuda/hco_plan.h"
using namespace vheat::cuda;
static void row(const char* op, const char* path, const TileLaunch& t) {
  std::printf("%s %s %d %d %zu %lld\n", op, path, t.tc, t.threads, t.smem, (long long)t.blocks);
}
int main(int argc, char** argv) {
  const size_t limit = std::strtoull(argv[1], nullptr, 10), acc = std::strtoull(argv[2], nullptr, 10);
  const HcoShape s{std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoll(argv[6])};
  const ForwardPlan f = plan_forward(s, acc, limit);
  if (f.path == HcoPath::kFused) row("forward", "fused", f.fused);
  else { row("forward", "lines_w", f.line_w); row("forward", "lines_h", f.line_h); }
  const GradEPlan g = plan_grad_E(s, acc, limit);
  if (g.path == HcoPath::kFused) row("grad_E", "fused", g.fused);
  else { row("grad_E", "lines_w", g.line_w); row("grad_E", "lines_h", g.line_h); }
  return 0;
}
"""


def launch_plans(archs=ARCHS, shapes=PLAN_SHAPES, cxx: str = "g++") -> list[LaunchPlan]:
    """What hco_plan.h asks for on each shape, for fp32 and fp64 accumulators, per arch."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "plan.cpp"), os.path.join(tmp, "plan")
        Path(src).write_text(_PLAN_MAIN)
        subprocess.run([cxx, "-std=c++20", "-O1", f"-I{ROOT / 'csrc'}", src, "-o", exe], check=True)
        rows = []
        for arch in archs:
            for acc in (4, 8):
                for shape in shapes:
                    args = [exe, str(SMEM_OPTIN[arch]), str(acc), *map(str, shape)]
                    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
                    for line in out.splitlines():
                        op, path, tc, threads, smem, blocks = line.split()
                        rows.append(LaunchPlan(arch, tuple(shape), acc, op, path, int(tc), int(threads), int(smem),
                                               int(blocks)))
    return rows


def kernel_table(rows: list[KernelResources]) -> str:
    lines = [f"{'arch':<6}{'regs':>5}{'spill':>7}{'stack':>6}{'smem':>6}  kernel"]
    for r in sorted(rows, key=lambda r: (r.arch, r.kernel)):
        lines.append(f"sm_{r.arch:<3}{r.registers:>5}{r.spill_stores + r.spill_loads:>7}{r.stack_bytes:>6}"
                     f"{r.static_smem:>6}  {r.kernel}")
    return "\n".join(lines)


def plan_table(rows: list[LaunchPlan]) -> str:
    lines = [f"{'arch':<6}{'acc':>4} {'shape (B,H,W,C)':<22}{'op':<8}{'path':<9}{'tc':>3}{'thr':>5}{'smem KiB':>10}"
             f"{'blocks':>10}"]
    for r in rows:
        lines.append(f"sm_{r.arch:<3}{'fp' + str(8 * r.acc_bytes):>4} {str(r.shape):<22}{r.op:<8}{r.path:<9}"
                     f"{r.kernel_tc:>3}{r.threads:>5}{r.smem / 1024:>10.1f}{r.blocks:>10}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=sorted(SMEM_OPTIN))
    p.add_argument("--check", action="store_true", help="exit 1 on spills or shared memory over the limits")
    p.add_argument("--json", help="also write the tables to this JSON file")
    args = p.parse_args(argv)
    kernels = parse_ptxas(compile_ptxas_log(args.arch))
    plans = launch_plans(args.arch)
    print(kernel_table(kernels))
    print()
    print(plan_table(plans))
    problems = [f"sm_{r.arch} {r.kernel}: {m}" for r in kernels for m in r.problems()]
    problems += [f"sm_{r.arch} {r.shape} fp{8 * r.acc_bytes} {r.op}: {m}" for r in plans for m in r.problems()]
    if args.json:
        atomic_write_json(args.json, {"kernels": [dataclasses.asdict(r) for r in kernels],
                                       "plans": [dataclasses.asdict(r) for r in plans], "problems": problems}, indent=1)
    print("\n" + ("\n".join(["PROBLEMS:"] + problems) if problems else "no spills; shared memory within limits"))
    return 1 if (problems and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
