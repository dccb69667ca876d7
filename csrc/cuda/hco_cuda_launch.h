// Host entry points of the CUDA HCO kernels, compiled by nvcc in hco_cuda_kernels.cu
// and called from the ATen op in hco_cuda.cpp. Keeping ATen out of the .cu (it only
// sees these plain pointers) keeps nvcc's per-architecture compile short.
#pragma once

#include <cuda_runtime_api.h>

#include "hco_plan.h"

namespace vheat::cuda {

// Accumulation type of the kernels: fp64 for double, fp32 for float / half / bfloat16.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type_t = typename AccType<scalar_t>::type;

// Each launch is followed by C10_CUDA_KERNEL_LAUNCH_CHECK (throws c10::Error).
template <typename scalar_t>
void launch_hco_forward(cudaStream_t stream, const HcoShape& s, const ForwardPlan& plan, const scalar_t* x,
                        const acc_type_t<scalar_t>* E, scalar_t* y, acc_type_t<scalar_t>* workspace);

template <typename scalar_t>
void launch_hco_grad_E(cudaStream_t stream, const HcoShape& s, const GradEPlan& plan, const scalar_t* x,
                       const scalar_t* gy, acc_type_t<scalar_t>* dE, acc_type_t<scalar_t>* workspace);

}  // namespace vheat::cuda
