"""Resource report of the CUDA HCO kernels without a GPU.

1. Compiles csrc/cuda/hco_cuda_kernels.cu with nvcc for sm_80 and sm_90 and ``-Xptxas -v``
   and tabulates registers, spills, stack and static shared memory per kernel, the
   tensor-core MMA (HMMA), ldmatrix (LDSM) and FMA (FFMA / DFMA) instructions in its SASS (cuobjdump
   -sass; the cuobjdump that ships with triton when the toolkit has none) and the blocks
   of 256 threads its registers let reside on one SM.
2. Compiles a tiny host program around csrc/cuda/hco_plan.h (the launch planner the op
   uses) and tabulates the dynamic shared memory, channels per block and threads it asks
   for on vHeat's shapes, per architecture limit and input dtype, with the kernel launches
   of one call (counted from the op's kernel sequence in hco_launch.cuh) and the resident
   blocks and warps per SM that registers, threads and shared memory allow together.

Problems (exit code 1 with --check): any spill or stack frame, more than 128 registers
(kernels promise two resident blocks of 256 threads), static shared memory above 48 KiB,
a fused or line kernel for fp32 / bf16 / fp16 without MMA instructions in its SASS (the
tensor-core transforms are gone), a bf16 / fp16 fused kernel without ldmatrix (LDSM), a
fused kernel without 16-byte global loads, dynamic shared memory above the
architecture's opt-in per-block limit, a plan with no resident block, a vHeat
classification plane (56/28/14/7) with more than 1 forward or 2 backward launches.

    python tools/cuda_resources.py [--arch 80 90] [--check] [--json out.json]
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
from vheat.io import atomic_write_json  # noqa: E402
from vheat_kernels import stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS_CU = ROOT / "csrc" / "cuda" / "hco_cuda_kernels.cu"
ARCHS = ("80", "90")
# Opt-in dynamic shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin).
SMEM_OPTIN = {"80": 163 * 1024, "90": 227 * 1024}
# Shared memory per SM for resident blocks (1 KiB of it reserved per block by the driver).
SMEM_PER_SM = {"80": 164 * 1024, "90": 228 * 1024}
SMEM_RESERVED_PER_BLOCK = 1024
REGS_PER_SM = 65536
THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 32
STATIC_SMEM_LIMIT = 48 * 1024
MMA_KINDS = ("FMA", "TF32x3", "BF16", "FP16")  # enum MmaKind in csrc/cuda/device_compat.cuh
MAX_REGISTERS = 128  # __launch_bounds__(256, 2)
MAX_THREADS = 256
# Input dtypes the plans are made for: bf16 / fp16 fused kernels keep 16-bit split cosine
# matrices (other shared memory than fp32); fp16 plans as bf16.
DTYPES = ("fp32", "bf16", "fp64")
# Kernel template argument of each plan dtype.
_KERNEL_TYPE = {"fp32": "float", "bf16": "BFloat16", "fp64": "double"}
# vHeat's classification planes at 224 px: forward in 1 launch, backward in at most 2.
CLASSIFICATION_SIDES = stages.CLASSIFICATION_SIDES
# (B, H, W, C): vHeat-T stages at 224 px (training batch), odd / 1-wide planes, a
# detection-size stage 1, the largest fused plane, and the longest supported axis.
PLAN_SHAPES = stages.stage_shapes("T", 224, 128) + [
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
    mma: int = 0  # HMMA instructions in the SASS
    fma: int = 0  # FFMA + DFMA instructions in the SASS
    ldg128: int = 0  # 16-byte global loads (LDG.E.128) in the SASS
    ldsm: int = 0  # ldmatrix shared-memory fragment loads (LDSM) in the SASS

    def is_16bit(self) -> bool:
        args = self.kernel.split("<", 1)[1] if "<" in self.kernel else ""
        return args.startswith(("BFloat16", "Half"))

    def needs_mma(self) -> bool:
        """Fused and line kernels of fp32 / bf16 / fp16 inputs run their transforms on tensor cores."""
        args = self.kernel.split("<", 1)[1] if "<" in self.kernel else ""
        if self.kernel.startswith("hco_fused_"):
            return not args.startswith("double")
        return self.kernel.startswith("hco_line_kernel<") and not args.startswith("FMA")

    def resident_blocks(self, threads: int = MAX_THREADS) -> int:
        """Blocks of `threads` one SM holds by registers and threads (shared memory aside)."""
        warps = -(-threads // 32)
        regs_per_warp = -(-max(self.registers, 1) * 32 // 256) * 256  # allocated per warp in 256s
        return min(REGS_PER_SM // (warps * regs_per_warp), THREADS_PER_SM // threads, MAX_BLOCKS_PER_SM)

    def problems(self) -> list[str]:
        out = []
        if self.needs_mma() and self.mma == 0:
            out.append("no tensor-core MMA (HMMA) instruction in the SASS")
        if self.kernel.startswith("hco_fused_") and self.is_16bit() and self.ldsm == 0:
            out.append("no ldmatrix (LDSM) in the SASS: the 16-bit MMA fragments are gathered with scalar loads")
        if self.kernel.startswith("hco_fused_") and self.ldg128 == 0:
            out.append("no 16-byte global load (LDG.E.128) in the SASS: the plane tile loads are not vectorised")
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
    launches: int = -1  # kernel launches of one call of the op (forward, or backward with dx and dE)
    resident: int = -1  # blocks per SM by registers, threads and shared memory (-1: unknown)
    dtype: str = ""  # input dtype of the plan (DTYPES); "" = fp32 / fp64 by acc_bytes

    @property
    def dtype_name(self) -> str:
        return self.dtype or f"fp{8 * self.acc_bytes}"

    def resident_warps(self) -> int:
        return self.resident * (-(-self.threads // 32)) if self.resident >= 0 else -1

    def problems(self) -> list[str]:
        out = []
        if self.shape[1] == self.shape[2] in CLASSIFICATION_SIDES and self.launches >= 0:
            most = 1 if self.op == "forward" else 2
            if self.launches > most:
                out.append(f"{self.launches} launches for a classification plane (at most {most})")
        if self.resident == 0:
            out.append("not even one block fits an SM")
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


def find_cuobjdump(nvcc: str | None = None) -> str | None:
    """The toolkit's cuobjdump, else the one bundled with triton (a toolkit without it)."""
    if nvcc and os.access(os.path.join(os.path.dirname(nvcc), "cuobjdump"), os.X_OK):
        return os.path.join(os.path.dirname(nvcc), "cuobjdump")
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if os.access(bundled, os.X_OK) else None


def compile_kernels(archs=ARCHS, nvcc: str | None = None) -> tuple[str, str]:
    """nvcc -c of the kernels file for each arch with -Xptxas -v; returns (ptxas report, SASS)."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set CUDA_HOME to the CUDA toolkit")
    cuobjdump = find_cuobjdump(nvcc)
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found (neither in the CUDA toolkit nor bundled with triton)")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "k.o")
        cmd = [nvcc, "-c", str(KERNELS_CU), "-o", obj, "-std=c++20", "-O3", "--use_fast_math",
               "--expt-relaxed-constexpr", "-DNDEBUG", "-Xptxas=-v", *gencode, *_include_flags()]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        sass = subprocess.run([cuobjdump, "-sass", obj], capture_output=True, text=True, check=True).stdout
    return proc.stdout + proc.stderr, sass


def count_sass(sass: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(arch, mangled kernel): {"mma": HMMA, "fma": FFMA + DFMA, "ldg128": LDG.E.128, "ldsm": LDSM count}} from
    cuobjdump -sass."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    arch, current = None, None
    for line in sass.splitlines():
        m = re.search(r"code for sm_(\d+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.search(r"Function : (\S+)", line)
        if m and arch:
            current = counts.setdefault((arch, m.group(1)), {"mma": 0, "fma": 0, "ldg128": 0, "ldsm": 0})
            continue
        if current is not None:
            if re.search(r"\bHMMA\.", line):
                current["mma"] += 1
            elif re.search(r"\b[DF]FMA\b", line):
                current["fma"] += 1
            elif re.search(r"\bLDG\.E\.128\b", line):
                current["ldg128"] += 1
            elif re.search(r"\bLDSM\.", line):
                current["ldsm"] += 1
    return counts


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
    # Template kernels demangle with their return type and arguments ("void name<float>(float
    # const*, ...)"): keep the name, with MmaKind values by name.
    short = [re.sub(r"^void ", "", re.sub(r"\([^()]*\)$", "", o)).replace("vheat::cuda::", "").replace("c10::", "")
             for o in out]
    short = [re.sub(r"\(MmaKind\)(\d)", lambda m: MMA_KINDS[int(m.group(1))], k) for k in short]
    return dict(zip(names, short))


def parse_ptxas(log: str, sass_counts: dict | None = None) -> list[KernelResources]:
    """One row per (arch, kernel) from a ``ptxas -v`` report (+ SASS instruction counts)."""
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
        if sass_counts is not None:
            counts = sass_counts.get((r.arch, r.kernel))
            if counts is None:
                raise RuntimeError(f"kernel {r.kernel} for sm_{r.arch} is missing from the SASS listing")
            r.mma, r.fma, r.ldg128, r.ldsm = counts["mma"], counts["fma"], counts["ldg128"], counts["ldsm"]
        r.kernel = names[r.kernel]
    return rows


_PLAN_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <string>
#include "cuda/hco_launch.cuh"
using namespace vheat::cuda;
// A 16-bit input type for the plan of the bf16 / fp16 kernels (never run here).
struct Bf16 {
  uint16_t bits = 0;
  Bf16() = default;
  Bf16(float v) : bits(emu::bf16_bits(v)) {}
  operator float() const { return emu::bf16_value(bits); }
};
template <>
struct vheat::cuda::MmaKindOf<Bf16> {
  static constexpr MmaKind value = MmaKind::kBf16;
};
// Counts the launches of the op's real kernel sequence (hco_launch.cuh) without running it.
struct CountingLaunch {
  int* n;
  template <typename... K, typename... A>
  void operator()(void (*)(K...), int64_t blocks, int, size_t, A...) const { *n += blocks > 0; }
};
static void row(const char* op, const char* path, const TileLaunch& t, int launches) {
  std::printf("%s %s %d %d %zu %lld %d\n", op, path, t.tc, t.threads, t.smem, (long long)t.blocks, launches);
}
template <typename T, typename A>
static void plans(const HcoShape& s, size_t limit) {
  int nf = 0, nb = 0;
  const bool split16 = is_16bit(MmaKindOf<T>::value);
  const PlaneStrides st = contiguous_strides(s);
  const ForwardPlan f = plan_forward(s, sizeof(A), split16, limit);
  run_forward(CountingLaunch{&nf}, s, f, (const T*)nullptr, st, (const A*)nullptr, (T*)nullptr, (A*)nullptr);
  const BackwardPlan b = plan_backward(s, sizeof(A), split16, limit, true, true);
  run_backward(CountingLaunch{&nb}, s, b, (const T*)nullptr, st, (const T*)nullptr, st, (const A*)nullptr, (T*)nullptr,
               (A*)nullptr, (A*)nullptr);
  if (f.path == HcoPath::kFused) row("forward", "fused", f.fused, nf);
  else { row("forward", "lines_w", f.line_w, nf); row("forward", "lines_h", f.line_h, nf); }
  if (b.path == HcoPath::kFused) row("backward", "fused", b.fused, nb);
  else { row("backward", "lines_w", b.line_w, nb); row("backward", "lines_h", b.line_h, nb); }
}
int main(int argc, char** argv) {
  const size_t limit = std::strtoull(argv[1], nullptr, 10);
  const std::string dtype = argv[2];
  const HcoShape s{std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoll(argv[6])};
  if (dtype == "fp64") plans<double, double>(s, limit);
  else if (dtype == "bf16") plans<Bf16, float>(s, limit);
  else plans<float, float>(s, limit);
  return 0;
}
"""


def launch_plans(archs=ARCHS, shapes=PLAN_SHAPES, cxx: str = "g++") -> list[LaunchPlan]:
    """What hco_plan.h asks for on each shape, for fp32, bf16 (fp16 plans the same) and fp64
    inputs, per arch, with the kernel launches of one forward and one backward (dx and dE) call."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "plan.cpp"), os.path.join(tmp, "plan")
        Path(src).write_text(_PLAN_MAIN)
        subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", f"-I{ROOT / 'csrc'}", src, "-o",
                        exe], check=True)
        rows = []
        for arch in archs:
            for dtype in DTYPES:
                acc = 8 if dtype == "fp64" else 4
                for shape in shapes:
                    args = [exe, str(SMEM_OPTIN[arch]), dtype, *map(str, shape)]
                    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
                    for line in out.splitlines():
                        op, path, tc, threads, smem, blocks, launches = line.split()
                        rows.append(LaunchPlan(arch, tuple(shape), acc, op, path, int(tc), int(threads), int(smem),
                                               int(blocks), int(launches), dtype=dtype))
    return rows


_PLAN_KERNELS = {"fused": {"forward": "hco_fused_forward_kernel", "backward": "hco_fused_backward_kernel"}}


def add_residency(plans: list[LaunchPlan], kernels: list[KernelResources]) -> None:
    """Resident blocks per SM of each plan: registers (the most any kernel of that op and
    input type uses; bf16 plans take the bf16 and fp16 kernels, line plans every line kernel of
    their accumulator), threads, and dynamic + reserved shared memory."""
    for p in plans:
        name = _PLAN_KERNELS.get(p.path, {}).get(p.op)
        acc_double = p.acc_bytes == 8
        if name is None:  # line path
            matching = [k for k in kernels if k.arch == p.arch and k.kernel.startswith("hco_line_kernel<")
                        and ("double" in k.kernel) == acc_double]
        else:
            types = ("BFloat16", "Half") if p.dtype == "bf16" else (_KERNEL_TYPE.get(p.dtype_name, "float"),)
            matching = [k for k in kernels if k.arch == p.arch and k.kernel.startswith(tuple(f"{name}<{t}," for t in types))]
        if not matching or p.threads <= 0:
            continue
        by_regs = min(k.resident_blocks(p.threads) for k in matching)
        by_smem = SMEM_PER_SM[p.arch] // (p.smem + SMEM_RESERVED_PER_BLOCK)
        p.resident = min(by_regs, by_smem)


def kernel_table(rows: list[KernelResources]) -> str:
    lines = [f"{'arch':<6}{'regs':>5}{'spill':>7}{'stack':>6}{'smem':>6}{'MMA':>6}{'FMA':>6}{'LDG128':>7}{'LDSM':>6}{'blk/SM':>7}  kernel"]
    for r in sorted(rows, key=lambda r: (r.arch, r.kernel)):
        lines.append(f"sm_{r.arch:<3}{r.registers:>5}{r.spill_stores + r.spill_loads:>7}{r.stack_bytes:>6}"
                     f"{r.static_smem:>6}{r.mma:>6}{r.fma:>6}{r.ldg128:>7}{r.ldsm:>6}{r.resident_blocks():>7}  {r.kernel}")
    return "\n".join(lines)


def plan_table(rows: list[LaunchPlan]) -> str:
    lines = [f"{'arch':<6}{'dtype':>5} {'shape (B,H,W,C)':<22}{'op':<9}{'path':<9}{'launch':>7}{'tc':>3}{'thr':>5}"
             f"{'smem KiB':>10}{'blocks':>10}{'res/SM':>7}{'warps/SM':>9}"]
    for r in rows:
        lines.append(f"sm_{r.arch:<3}{r.dtype_name:>5} {str(r.shape):<22}{r.op:<9}{r.path:<9}"
                     f"{r.launches:>7}{r.kernel_tc:>3}{r.threads:>5}{r.smem / 1024:>10.1f}{r.blocks:>10}{r.resident:>7}"
                     f"{r.resident_warps():>9}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=sorted(SMEM_OPTIN))
    p.add_argument("--check", action="store_true", help="exit 1 on spills or shared memory over the limits")
    p.add_argument("--json", help="also write the tables to this JSON file")
    args = p.parse_args(argv)
    log, sass = compile_kernels(args.arch)
    kernels = parse_ptxas(log, count_sass(sass))
    plans = launch_plans(args.arch)
    add_residency(plans, kernels)
    print(kernel_table(kernels))
    print()
    print(plan_table(plans))
    problems = [f"sm_{r.arch} {r.kernel}: {m}" for r in kernels for m in r.problems()]
    problems += [f"sm_{r.arch} {r.shape} {r.dtype_name} {r.op}: {m}" for r in plans for m in r.problems()]
    if args.json:
        atomic_write_json(args.json, {"kernels": [dataclasses.asdict(r) for r in kernels],
                                       "plans": [dataclasses.asdict(r) for r in plans], "problems": problems}, indent=1)
    ok = ("no spills; MMA in every fp32/bf16/fp16 fused and line kernel; ldmatrix in the bf16/fp16 fused kernels; "
          "16-byte tile loads; shared memory within limits; classification planes in 1 forward / <= 2 backward launches")
    print("\n" + ("\n".join(["PROBLEMS:"] + problems) if problems else ok))
    return 1 if (problems and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
