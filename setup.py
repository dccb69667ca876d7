"""Builds vheat_kernels._C: the vheat op library (CPU always, CUDA when asked for / found).

Switches (environment variables):
  VHEAT_BUILD_CUDA   auto (default: build CUDA kernels when nvcc and a CUDA torch exist),
                     1 (require them: fail if they cannot be built), 0 (CPU only).
  TORCH_CUDA_ARCH_LIST  CUDA architectures, default "8.0;9.0" (sm_80, sm_90).
  VHEAT_PTXAS_VERBOSE   1 adds -Xptxas -v (register / shared-memory report per kernel).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def _cuda_wanted() -> bool:
    mode = os.environ.get("VHEAT_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return False
    import torch
    import torch.utils.cpp_extension as cpp_extension

    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    home = _locate_cuda_home()
    if home is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME to the folder with bin/nvcc)")
    elif cpp_extension.CUDA_HOME != home:
        # torch resolved CUDA_HOME when cpp_extension was first imported; point it (and
        # the nvcc it runs) at the real toolkit.
        os.environ["CUDA_HOME"] = home
        cpp_extension.CUDA_HOME = home
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        reasons.append("no CUDA sources in csrc/cuda")
    if reasons and mode in ("1", "yes", "on", "true", "force"):
        sys.exit("VHEAT_BUILD_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(reasons))
    if reasons:
        print("vheat: building without CUDA kernels (" + "; ".join(reasons) + ")", file=sys.stderr)
        return False
    return True


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
    # No GPU to detect the architecture from on build machines: default to A100 / H100.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr", "-DNDEBUG"]
    if os.environ.get("VHEAT_PTXAS_VERBOSE", "0") == "1":
        nvcc_flags.append("-Xptxas=-v")
    # hco_cuda_kernels.cu holds the kernels (nvcc, no ATen); hco_cuda.cpp the op (g++).
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    return [CUDAExtension("vheat_kernels._C", sources,
                          extra_compile_args={"cxx": cxx_flags + ["-DVHEAT_WITH_CUDA"],
                                              "nvcc": nvcc_flags + ["-DVHEAT_WITH_CUDA"]},
                          extra_link_args=["-fopenmp"],
                          include_dirs=[os.path.join(ROOT, "csrc")] + _nvidia_include_dirs())]


def main():
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="vheat-kernels",
        version="0.1.0",
        packages=find_packages(include=["vheat_kernels", "vheat_kernels.*", "vheat", "vheat.*"]),
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        python_requires=">=3.10",
        entry_points={"console_scripts": ["vheat = vheat.cli.main:main"]},
    )


if __name__ == "__main__":
    main()
