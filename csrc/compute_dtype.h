// The dtype every HCO kernel computes in: fp64 for float64 inputs, fp32 for everything
// else (float32, bfloat16, float16). The CPU kernels, the CUDA host code and the CUDA
// device code all take it from here. Nothing is included so that nvcc-compiled files,
// which see no ATen (see cuda/hco_cuda_launch.h), can use it too.
#pragma once

namespace vheat {

// compute_type_t<scalar_t>: the C++ type, for templates over the storage type.
template <typename scalar_t>
struct ComputeType {
  using type = float;
};
template <>
struct ComputeType<double> {
  using type = double;
};
template <typename scalar_t>
using compute_type_t = typename ComputeType<scalar_t>::type;

// compute_dtype(st): the same rule for host code holding an at::ScalarType (a template on
// the enum, c10::ScalarType, so that this header needs no c10 include).
template <typename ScalarType>
constexpr ScalarType compute_dtype(ScalarType st) {
  return st == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

}  // namespace vheat
