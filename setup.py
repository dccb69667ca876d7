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


def _cuda_wanted() -> bool:
    mode = os.environ.get("VHEAT_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "no", "off", "false"):
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    if CUDA_HOME is None or shutil.which("nvcc", path=os.path.join(CUDA_HOME or "", "bin")) is None:
        reasons.append("nvcc / CUDA_HOME not found")
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        reasons.append("no CUDA sources in csrc/cuda")
    if reasons and mode in ("1", "yes", "on", "true", "force"):
        sys.exit("VHEAT_BUILD_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(reasons))
    if reasons:
        print("vheat: building without CUDA kernels (" + "; ".join(reasons) + ")", file=sys.stderr)
        return False
    return True


def _nvidia_include_dirs() -> list[str]:
    # The CUDA torch wheels ship the CUDA headers (cusparse.h, ...) under site-packages/nvidia.
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))


def extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = ["csrc/ops.cpp", "csrc/python_module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20", "-DNDEBUG"]
    if not _cuda_wanted():
        return [CppExtension("vheat_kernels._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc_flags = ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr", "-DNDEBUG"]
    if os.environ.get("VHEAT_PTXAS_VERBOSE", "0") == "1":
        nvcc_flags.append("-Xptxas=-v")
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
    )


if __name__ == "__main__":
    main()
