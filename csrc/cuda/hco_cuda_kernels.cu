// Instantiates the CUDA HCO kernel sequences (hco_launch.cuh) for float32, float64,
// float16 and bfloat16 and launches them on a stream. No ATen here: see hco_cuda.cpp.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <climits>

#include "hco_cuda_launch.h"
#include "hco_launch.cuh"

namespace vheat::cuda {

// bf16 / fp16 transforms of the fused kernels run on tensor cores (hco_kernels.cuh).
template <>
struct MmaKindOf<c10::BFloat16> {
  static constexpr MmaKind value = MmaKind::kBf16;
};
template <>
struct MmaKindOf<c10::Half> {
  static constexpr MmaKind value = MmaKind::kFp16;
};

namespace {

// <<<>>> on one stream, checked right after the launch.
struct CudaLaunch {
  cudaStream_t stream;
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), int64_t blocks, int threads, size_t smem, Args... args) const {
    if (blocks == 0) return;
    TORCH_CHECK(blocks <= INT_MAX, "vheat CUDA: a grid of ", blocks, " blocks exceeds the CUDA limit");
    if (smem > 48 * 1024) {  // above the static limit each kernel must opt in
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(static_cast<KArgs>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

template <typename scalar_t>
void launch_hco_forward(cudaStream_t stream, const HcoShape& s, const ForwardPlan& plan, const scalar_t* x,
                        const PlaneStrides& xs, const compute_type_t<scalar_t>* E, scalar_t* y,
                        compute_type_t<scalar_t>* workspace) {
  run_forward(CudaLaunch{stream}, s, plan, x, xs, E, y, workspace);
}

template <typename scalar_t>
void launch_hco_backward(cudaStream_t stream, const HcoShape& s, const BackwardPlan& plan, const scalar_t* x,
                         const PlaneStrides& xs, const scalar_t* gy, const PlaneStrides& gs,
                         const compute_type_t<scalar_t>* E, scalar_t* dx, compute_type_t<scalar_t>* dE,
                         compute_type_t<scalar_t>* workspace) {
  run_backward(CudaLaunch{stream}, s, plan, x, xs, gy, gs, E, dx, dE, workspace);
}

#define VHEAT_INSTANTIATE(T)                                                                                         \
  template void launch_hco_forward<T>(cudaStream_t, const HcoShape&, const ForwardPlan&, const T*,                   \
                                      const PlaneStrides&, const compute_type_t<T>*, T*, compute_type_t<T>*);        \
  template void launch_hco_backward<T>(cudaStream_t, const HcoShape&, const BackwardPlan&, const T*,                 \
                                       const PlaneStrides&, const T*, const PlaneStrides&, const compute_type_t<T>*, \
                                       T*, compute_type_t<T>*, compute_type_t<T>*);
VHEAT_INSTANTIATE(float)
VHEAT_INSTANTIATE(double)
VHEAT_INSTANTIATE(c10::Half)
VHEAT_INSTANTIATE(c10::BFloat16)
#undef VHEAT_INSTANTIATE

}  // namespace vheat::cuda
