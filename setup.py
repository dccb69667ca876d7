"""Builds vheat_kernels._C, the vheat op library: CPU kernels always, CUDA kernels by the
policy below. Package metadata lives in pyproject.toml.

Build with the torch you will run (`pip install --no-build-isolation .`): the library is
compiled against it.

Switches (environment variables):
  VHEAT_BUILD_CUDA      auto (default): build the CUDA kernels only when a GPU is visible
                        (`nvidia-smi -L` lists one, or torch.cuda.is_available()), torch is a
                        CUDA build and a CUDA toolkit whose major version matches torch's is
                        found; otherwise say why once and build CPU-only. A CUDA build takes
                        minutes, so nvcc alone is no reason to start one.
                        1: build them or stop with what is missing (a GPU is not needed).
                        0: CPU-only.
  TORCH_CUDA_ARCH_LIST  CUDA architectures, default "8.0;9.0+PTX": SASS for A100 (sm_80) and
                        H100 (sm_90), plus PTX for compute_90 that newer GPUs JIT-compile.
                        The list is compiled in as VHEAT_CUDA_ARCH_LIST (build_info()).
  VHEAT_PTXAS_VERBOSE   1 adds -Xptxas -v (register / shared-memory report per kernel).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
_MODES = {"auto": "auto", "": "auto", "1": "on", "yes": "on", "on": "on", "true": "on", "force": "on",
          "0": "off", "no": "off", "off": "off", "false": "off"}


def build_cuda_mode() -> str:
    """'auto', 'on' or 'off' from VHEAT_BUILD_CUDA."""
    value = os.environ.get("VHEAT_BUILD_CUDA", "auto")
    try:
        return _MODES[value.strip().lower()]
    except KeyError:
        sys.exit(f"vheat: VHEAT_BUILD_CUDA={value!r} is not one of auto, 1, 0")


def _locate_cuda_home() -> str | None:
    """CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else the toolkit of the nvcc on PATH.

    The nvcc on PATH may be a wrapper script (here /usr/local/bin/nvcc execs
    /usr/local/cuda-13.0/bin/nvcc), from which torch would guess CUDA_HOME=/usr/local;
    only a folder with bin/nvcc and include/cuda_runtime.h counts as a toolkit.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in filter(None, candidates):
        if os.access(os.path.join(home, "bin", "nvcc"), os.X_OK) and os.path.isfile(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


def nvcc_version(cuda_home: str) -> str | None:
    """'13.0' from `nvcc --version` (None if it cannot be run or read)."""
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def visible_gpu() -> str | None:
    """What shows a GPU on this machine (None when nothing does)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        if gpus:
            return f"nvidia-smi -L lists {len(gpus)} GPU(s)"
    import torch

    if torch.cuda.is_available():
        return f"torch sees {torch.cuda.device_count()} CUDA device(s)"
    return None


def cuda_build_problems(torch_cuda: str | None, cuda_home: str | None, toolkit_version: str | None) -> list[str]:
    """Why the CUDA kernels cannot be built with this torch and toolkit ([] when they can)."""
    problems = []
    if torch_cuda is None:
        problems.append("the installed torch is not a CUDA build (install a CUDA torch wheel)")
    if cuda_home is None:
        problems.append("no CUDA toolkit found (set CUDA_HOME to the folder with bin/nvcc)")
    elif toolkit_version is None:
        problems.append(f"cannot read the CUDA version from {cuda_home}/bin/nvcc --version")
    elif torch_cuda is not None and toolkit_version.split(".")[0] != torch_cuda.split(".")[0]:
        # torch.utils.cpp_extension refuses a major-version mismatch (minor ones only warn).
        problems.append(f"nvcc in {cuda_home} is CUDA {toolkit_version} but torch was built with CUDA "
                        f"{torch_cuda}; point CUDA_HOME at a CUDA {torch_cuda.split('.')[0]}.x toolkit "
                        f"or install the torch wheel for CUDA {toolkit_version}")
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        problems.append("no CUDA sources in csrc/cuda")
    return problems


def decide_cuda_build(mode: str, gpu: str | None, problems: list[str]) -> tuple[bool, str]:
    """(build the CUDA kernels?, one line saying why). Exits when mode 'on' cannot be met."""
    if mode == "off":
        return False, "VHEAT_BUILD_CUDA=0: CPU kernels only"
    if mode == "on":
        if problems:
            sys.exit("vheat: VHEAT_BUILD_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(problems)
                     + ". Fix that, or build CPU-only with VHEAT_BUILD_CUDA=0.")
        return True, "VHEAT_BUILD_CUDA=1: building the CUDA kernels"
    if gpu is None:
        return False, ("no GPU visible (nvidia-smi -L lists none, torch.cuda.is_available() is False): "
                       "CPU kernels only; VHEAT_BUILD_CUDA=1 builds the CUDA kernels anyway")
    if problems:
        return False, (f"{gpu}, but the CUDA kernels cannot be built: " + "; ".join(problems)
                       + ". Building CPU-only (VHEAT_BUILD_CUDA=1 makes this an error).")
    return True, f"{gpu}: building the CUDA kernels (VHEAT_BUILD_CUDA=0 skips them)"


def _cuda_wanted() -> bool:
    mode = build_cuda_mode()
    if mode == "off":
        build, why = decide_cuda_build(mode, None, [])
    else:
        import torch
        import torch.utils.cpp_extension as cpp_extension

        home = _locate_cuda_home()
        if home is not None and cpp_extension.CUDA_HOME != home:
            # torch resolved CUDA_HOME when cpp_extension was first imported; point it (and
            # the nvcc it runs) at the real toolkit.
            os.environ["CUDA_HOME"] = home
            cpp_extension.CUDA_HOME = home
        problems = cuda_build_problems(torch.version.cuda, home, nvcc_version(home) if home else None)
        build, why = decide_cuda_build(mode, visible_gpu() if mode == "auto" else None, problems)
    print(f"vheat: {why}", file=sys.stderr)
    return build


def cuda_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST for this build (set in the environment, where torch reads it)."""
    return os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)


def _nvidia_include_dirs() -> list[str]:
    # The CUDA torch wheels ship CUDA headers (cusparse.h, cublas_v2.h, ...) that ATen's
    # CUDA headers include under site-packages/nvidia/cu*/include, not in the toolkit.
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = ["csrc/ops.cpp", "csrc/python_module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-std=c++20", "-DNDEBUG"]
    if not _cuda_wanted():
        return [CppExtension("vheat_kernels._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])]
    # Flags reach the compilers as argv entries (ninja quotes each), so the quotes here make
    # the macro a C string literal: "8.0;9.0+PTX".
    cuda_macros = ["-DVHEAT_WITH_CUDA", f'-DVHEAT_CUDA_ARCH_LIST="{cuda_arch_list()}"']
    nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr", "-DNDEBUG"]
    if os.environ.get("VHEAT_PTXAS_VERBOSE", "0") == "1":
        nvcc_flags.append("-Xptxas=-v")
    # hco_cuda_kernels.cu holds the kernels (nvcc, no ATen); hco_cuda.cpp the op (g++).
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    return [CUDAExtension("vheat_kernels._C", sources,
                          extra_compile_args={"cxx": cxx_flags + cuda_macros, "nvcc": nvcc_flags + cuda_macros},
                          extra_link_args=["-fopenmp"],
                          include_dirs=[os.path.join(ROOT, "csrc")] + _nvidia_include_dirs())]


def main():
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        sys.exit("vheat: building vheat-kernels needs torch: install torch first, then "
                 "`pip install --no-build-isolation .` (the op library is compiled against that torch)")
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})


if __name__ == "__main__":
    main()
