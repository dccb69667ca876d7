// Python entry point of vheat_kernels._C: importing it runs the TORCH_LIBRARY
// registrations of the op library; build_info() says what was compiled in.
#include <torch/extension.h>

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
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vheat op library (Heat Conduction Operator kernels)";
  m.def("build_info", &build_info, "What the op library was compiled with");
}
