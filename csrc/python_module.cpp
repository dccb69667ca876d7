// Python entry point of vheat_kernels._C: importing it runs the TORCH_LIBRARY
// registrations of the op library; build_info() says what was compiled in.
#include <torch/extension.h>
#include <torch/version.h>

#include <string>

#include "cuda/hco_plan.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {
py::dict build_info() {
  py::dict info;
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#ifdef VHEAT_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  // TORCH_CUDA_ARCH_LIST the CUDA kernels were compiled for (setup.py passes it as a
  // string literal, e.g. "8.0;9.0+PTX"); None when the build did not say (older or
  // CPU-only builds). vheat_kernels/cuda_arch.py parses it.
#ifdef VHEAT_CUDA_ARCH_LIST
  info["cuda_arch_list"] = VHEAT_CUDA_ARCH_LIST;
#else
  info["cuda_arch_list"] = py::none();
#endif
  // Longest H or W the CUDA kernels accept (compiled in either way: the CUDA backend's
  // reason for refusing a plane reads it).
  info["cuda_max_axis"] = vheat::cuda::kMaxAxis;
  // The torch this library was compiled against: it loads only into that torch's ABI.
  info["torch_built"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                        std::to_string(TORCH_VERSION_PATCH);
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vheat op library (Heat Conduction Operator kernels)";
  m.def("build_info", &build_info, "What the op library was compiled with");
}
