// The few CUDA built-ins the HCO kernels use, behind macros so the same kernel source
// compiles either with nvcc (the real thing) or with a host C++20 compiler as a block
// emulator (tests/cpp/test_cuda_emulated.cpp, tests/test_cuda_emulation.py): there every
// CUDA thread of a block is a std::thread and __syncthreads() is a std::barrier. That
// lets machines without a GPU check the kernels' indexing, tiling and synchronisation.
//
// Kernels may only use: block-stride loops over thread_index()/block_size(),
// block_index()/grid_size() on a 1-D grid, VHEAT_SYNC() at block-uniform points and
// dynamic shared memory from VHEAT_DYNAMIC_SMEM (no warp intrinsics, no atomics).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)

#define VHEAT_DEVICE __device__ __forceinline__
#define VHEAT_GLOBAL __global__
// At least two resident blocks per SM (<= 128 registers). Without the minimum, nvcc 13
// capped the fused dE kernel at 40-48 registers and spilled; with it no kernel spills.
#define VHEAT_LAUNCH_BOUNDS(n) __launch_bounds__(n, 2)
#define VHEAT_SYNC() __syncthreads()
#define VHEAT_DYNAMIC_SMEM(type, name)                                 \
  extern __shared__ __align__(16) unsigned char vheat_dynamic_smem[]; \
  type* name = reinterpret_cast<type*>(vheat_dynamic_smem)

namespace vheat::cuda {
VHEAT_DEVICE int thread_index() { return static_cast<int>(threadIdx.x); }
VHEAT_DEVICE int block_size() { return static_cast<int>(blockDim.x); }
VHEAT_DEVICE int64_t block_index() { return static_cast<int64_t>(blockIdx.x); }
VHEAT_DEVICE int64_t grid_size() { return static_cast<int64_t>(gridDim.x); }
VHEAT_DEVICE float cos_pi(float v) { return ::cospif(v); }
VHEAT_DEVICE double cos_pi(double v) { return ::cospi(v); }
VHEAT_DEVICE float rsqrt_of(float v) { return ::rsqrtf(v); }
VHEAT_DEVICE double rsqrt_of(double v) { return ::rsqrt(v); }
}  // namespace vheat::cuda

#else  // host block emulator

#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#define VHEAT_DEVICE inline
#define VHEAT_GLOBAL
#define VHEAT_LAUNCH_BOUNDS(n)
#define VHEAT_SYNC() ::vheat::cuda::emu::ctx.barrier->arrive_and_wait()
#define VHEAT_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::vheat::cuda::emu::ctx.smem)

namespace vheat::cuda {
namespace emu {
struct ThreadContext {
  int thread = 0, threads = 1;
  int64_t block = 0, blocks = 1;
  unsigned char* smem = nullptr;
  std::barrier<>* barrier = nullptr;
};
inline thread_local ThreadContext ctx;
}  // namespace emu

inline int thread_index() { return emu::ctx.thread; }
inline int block_size() { return emu::ctx.threads; }
inline int64_t block_index() { return emu::ctx.block; }
inline int64_t grid_size() { return emu::ctx.blocks; }
inline float cos_pi(float v) { return static_cast<float>(std::cos(M_PI * static_cast<double>(v))); }
inline double cos_pi(double v) { return std::cos(M_PI * v); }
inline float rsqrt_of(float v) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(v))); }
inline double rsqrt_of(double v) { return 1.0 / std::sqrt(v); }

// Same calling convention as the CUDA launcher in hco_cuda_kernels.cu. Blocks run one
// after another; shared memory starts as NaN bytes so reads of unwritten slots show up.
// max_threads > 0 caps the threads per block (kernels only use block-stride loops, so
// any count is valid), trading coverage of the planned count for speed.
struct EmulatedLaunch {
  int max_threads = 0;
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), int64_t blocks, int threads, size_t smem_bytes, Args... args) const {
    if (max_threads > 0 && threads > max_threads) threads = max_threads;
    std::vector<unsigned char> smem(smem_bytes + 16, 0xFF);
    for (int64_t block = 0; block < blocks; ++block) {
      std::memset(smem.data(), 0xFF, smem.size());
      std::barrier<> barrier(threads);
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          emu::ctx = {t, threads, block, blocks, smem.data(), &barrier};
          kernel(static_cast<KArgs>(args)...);
        });
      }
      for (auto& th : pool) th.join();
    }
  }
};
}  // namespace vheat::cuda

#endif
