// Host entry points of the CUDA HCO kernels, compiled by nvcc in hco_cuda_kernels.cu
// and called from the ATen op in hco_cuda.cpp. Keeping ATen out of the .cu (it only
// sees these plain pointers) keeps nvcc's per-architecture compile short.
#pragma once

#include <cuda_runtime_api.h>

#include "../compute_dtype.h"
#include "hco_plan.h"

namespace vheat::cuda {

// Each launch is followed by C10_CUDA_KERNEL_LAUNCH_CHECK (throws c10::Error). x and gy:
// channel stride 1, batch / row / pixel strides xs / gs; everything else contiguous.
template <typename scalar_t>
void launch_hco_forward(cudaStream_t stream, const HcoShape& s, const ForwardPlan& plan, const scalar_t* x,
                        const PlaneStrides& xs, const compute_type_t<scalar_t>* E, scalar_t* y,
                        compute_type_t<scalar_t>* workspace);

// dx (plan.need_dx) and dE in acc_t (plan.need_dE); see run_backward in hco_launch.cuh.
template <typename scalar_t>
void launch_hco_backward(cudaStream_t stream, const HcoShape& s, const BackwardPlan& plan, const scalar_t* x,
                         const PlaneStrides& xs, const scalar_t* gy, const PlaneStrides& gs,
                         const compute_type_t<scalar_t>* E, scalar_t* dx, compute_type_t<scalar_t>* dE,
                         compute_type_t<scalar_t>* workspace);

}  // namespace vheat::cuda
