// The few CUDA built-ins the HCO kernels use, behind macros so the same kernel source
// compiles either with nvcc (the real thing) or with a host C++20 compiler as a block
// emulator (tests/cpp/test_cuda_emulated.cpp, tests/test_backend_cuda_emulation.py): there every
// CUDA thread of a block is a std::thread and __syncthreads() is a std::barrier. That
// lets machines without a GPU check the kernels' indexing, tiling and synchronisation.
//
// Kernels may only use: block-stride loops over thread_index()/block_size(),
// block_index()/grid_size() on a 1-D grid, VHEAT_SYNC() at block-uniform points,
// dynamic shared memory from VHEAT_DYNAMIC_SMEM and the warp-level ldmatrix / tensor-core MMAs below
// (called by all 32 lanes of a warp together; blocks of a multiple of 32 threads); no
// other warp intrinsics, no atomics.
//
// MMAs (PTX mma.sync, sm_80+), D += A B with fp32 accumulators, fragments in PTX's
// layout (g = lane / 4, t = lane % 4; registers of two 16-bit values hold the lower
// k in their low half):
//   m16n8k16 bf16 / fp16: A reg r = A(g + 8 (r & 1), 2t + 8 (r >> 1) + {0, 1}),
//                         B reg r = B(2t + 8r + {0, 1}, g)
//   m16n8k8  tf32:        A reg r = A(g + 8 (r & 1), t + 4 (r >> 1)), B reg r = B(t + 4r, g)
//   D (both):             d[e] = D(g + 8 (e >> 1), 2t + (e & 1))
// The emulator rebuilds A and B from the 32 lanes' fragments with exactly this layout.
//
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (sm_75+): lane l gives the address of
// row l % 8 of matrix l / 8 (8 contiguous 16-bit values, 16-byte aligned, in shared
// memory); register i of lane l receives matrix i's (row l / 4, columns 2 (l % 4) + {0, 1}),
// with .trans (rows 2 (l % 4) + {0, 1}, column l / 4), the lower index in the low half.
#pragma once

#include <cstdint>

namespace vheat::cuda {
enum class MmaKind { kFma, kTf32x3, kBf16, kFp16 };
// The 16-bit kinds keep their cosine matrices pre-split (hi + lo) in 16-bit shared memory
// and load the A fragments with ldmatrix.
constexpr bool is_16bit(MmaKind k) { return k == MmaKind::kBf16 || k == MmaKind::kFp16; }
}  // namespace vheat::cuda

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

VHEAT_DEVICE int lane_index() { return static_cast<int>(threadIdx.x) & 31; }

// One 16-byte global load (LDG.128) into `out`; src must be 16-byte aligned.
template <typename T>
VHEAT_DEVICE void load_16_bytes(const T* src, T* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(src));
  memcpy(out, &raw, 16);
}

// Two floats rounded to nearest-even 16-bit values in one register (lo in the low half).
template <MmaKind K>
VHEAT_DEVICE uint32_t pack_16x2(float lo, float hi) {
  uint32_t r;
  if constexpr (K == MmaKind::kBf16) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}
// v rounded to the 16-bit type of K, back in fp32 (for the hi / lo split).
template <MmaKind K>
VHEAT_DEVICE float round_16(float v) {
  if constexpr (K == MmaKind::kBf16) return __bfloat162float(__float2bfloat16_rn(v));
  else return __half2float(__float2half_rn(v));
}
// v rounded to tf32 (nearest, ties away), as fp32 bits with the low 13 bits zero.
VHEAT_DEVICE uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}
VHEAT_DEVICE float tf32_value(uint32_t bits) { return __uint_as_float(bits); }

// ldmatrix x4 (see the header comment); `row` must point into shared memory. The memory
// clobber keeps the load after the __syncthreads that published the matrix.
template <bool kTrans>
VHEAT_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
  }
}

template <MmaKind K>
VHEAT_DEVICE void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (K == MmaKind::kBf16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (K == MmaKind::kFp16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
}  // namespace vheat::cuda

#else  // host block emulator

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define VHEAT_DEVICE inline
#define VHEAT_GLOBAL
#define VHEAT_LAUNCH_BOUNDS(n)
#define VHEAT_SYNC() ::vheat::cuda::emu::ctx.barrier->arrive_and_wait()
#define VHEAT_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::vheat::cuda::emu::ctx.smem)

namespace vheat::cuda {
namespace emu {
// What the lanes of one warp exchange in an MMA: their A and B fragments.
struct WarpExchange {
  explicit WarpExchange(int lanes) : barrier(lanes), lanes(lanes) {}
  std::barrier<> barrier;
  int lanes;
  // Two slots used in turn: a lane writes slot p ^ 1 for its next MMA only after the
  // barrier of this one, and no lane passes the next barrier before every lane has read
  // slot p, so one barrier per MMA suffices.
  uint32_t a[2][32][4];
  uint32_t b[2][32][2];
  const uint16_t* rows[2][32];  // ldmatrix row addresses
  int phase[32] = {};
};
struct ThreadContext {
  int thread = 0, threads = 1;
  int64_t block = 0, blocks = 1;
  unsigned char* smem = nullptr;
  std::barrier<>* barrier = nullptr;
  std::vector<std::unique_ptr<WarpExchange>>* warps = nullptr;
};
inline thread_local ThreadContext ctx;

inline uint32_t float_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
// Round to nearest even, as cvt.rn.bf16x2.f32 (finite values; NaN stays NaN).
inline uint16_t bf16_bits(float v) {
  const uint32_t u = float_bits(v);
  if (std::isnan(v)) return 0x7FC0;
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline uint16_t fp16_bits(float v) {
  const _Float16 h = static_cast<_Float16>(v);  // round to nearest even, as cvt.rn.f16x2.f32
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
inline float bf16_value(uint16_t bits) { return bits_float(uint32_t(bits) << 16); }
inline float fp16_value(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}
}  // namespace emu

inline int thread_index() { return emu::ctx.thread; }
inline int block_size() { return emu::ctx.threads; }
inline int64_t block_index() { return emu::ctx.block; }
inline int64_t grid_size() { return emu::ctx.blocks; }
inline float cos_pi(float v) { return static_cast<float>(std::cos(M_PI * static_cast<double>(v))); }
inline double cos_pi(double v) { return std::cos(M_PI * v); }
inline float rsqrt_of(float v) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(v))); }
inline double rsqrt_of(double v) { return 1.0 / std::sqrt(v); }

inline int lane_index() { return emu::ctx.thread & 31; }

template <typename T>
inline void load_16_bytes(const T* src, T* out) {
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) {
    std::fprintf(stderr, "emulated load_16_bytes: misaligned address\n");
    std::abort();
  }
  std::memcpy(out, src, 16);
}

template <MmaKind K>
inline uint32_t pack_16x2(float lo, float hi) {
  if constexpr (K == MmaKind::kBf16) return uint32_t(emu::bf16_bits(lo)) | (uint32_t(emu::bf16_bits(hi)) << 16);
  else return uint32_t(emu::fp16_bits(lo)) | (uint32_t(emu::fp16_bits(hi)) << 16);
}
template <MmaKind K>
inline float round_16(float v) {
  if constexpr (K == MmaKind::kBf16) return emu::bf16_value(emu::bf16_bits(v));
  else return emu::fp16_value(emu::fp16_bits(v));
}
// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest with ties away from zero.
inline uint32_t to_tf32(float v) {
  if (!std::isfinite(v)) return emu::float_bits(v);
  return (emu::float_bits(v) + 0x1000u) & 0xFFFFE000u;
}
inline float tf32_value(uint32_t bits) { return emu::bits_float(bits); }

// ldmatrix x4 on the emulator: every lane publishes its row address, then reads its four
// registers from the rows of the other lanes (header comment). Rows must be 16-byte
// aligned, as on the device.
template <bool kTrans>
inline void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
  auto& w = *(*emu::ctx.warps)[emu::ctx.thread / 32];
  if (w.lanes != 32) {
    std::fprintf(stderr, "emulated ldmatrix: warp of %d lanes (blocks must have a multiple of 32 threads)\n", w.lanes);
    std::abort();
  }
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
    std::fprintf(stderr, "emulated ldmatrix: row address not 16-byte aligned\n");
    std::abort();
  }
  const int lane = lane_index();
  const int p = w.phase[lane];
  w.phase[lane] = p ^ 1;
  w.rows[p][lane] = row;
  w.barrier.arrive_and_wait();
  const int q = lane / 4, t2 = 2 * (lane % 4);
  for (int i = 0; i < 4; ++i) {
    const uint16_t lo = kTrans ? w.rows[p][8 * i + t2][q] : w.rows[p][8 * i + q][t2];
    const uint16_t hi = kTrans ? w.rows[p][8 * i + t2 + 1][q] : w.rows[p][8 * i + q][t2 + 1];
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
}

// mma.sync on the emulator: every lane publishes its fragments, then computes its four
// D elements from the whole A and B rebuilt with PTX's fragment layout (header comment).
template <MmaKind K>
inline void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  auto& w = *(*emu::ctx.warps)[emu::ctx.thread / 32];
  if (w.lanes != 32) {
    std::fprintf(stderr, "emulated mma_sync: warp of %d lanes (blocks must have a multiple of 32 threads)\n", w.lanes);
    std::abort();
  }
  const int lane = lane_index();
  const int p = w.phase[lane];
  w.phase[lane] = p ^ 1;
  std::memcpy(w.a[p][lane], a, sizeof a);
  std::memcpy(w.b[p][lane], b, sizeof b);
  w.barrier.arrive_and_wait();
  auto half = [](uint32_t reg, int which) {
    const uint16_t bits = static_cast<uint16_t>(which ? reg >> 16 : reg & 0xFFFFu);
    return K == MmaKind::kBf16 ? emu::bf16_value(bits) : emu::fp16_value(bits);
  };
  auto A = [&](int r, int k) -> float {
    if constexpr (K == MmaKind::kTf32x3) return tf32_value(w.a[p][(r % 8) * 4 + k % 4][(r >= 8) + 2 * (k >= 4)]);
    else return half(w.a[p][(r % 8) * 4 + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2);
  };
  auto B = [&](int k, int n) -> float {
    if constexpr (K == MmaKind::kTf32x3) return tf32_value(w.b[p][n * 4 + k % 4][k >= 4]);
    else return half(w.b[p][n * 4 + (k % 8) / 2][k >= 8], k % 2);
  };
  constexpr int kDepth = K == MmaKind::kTf32x3 ? 8 : 16;
  const int g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < kDepth; ++k) acc += A(row, k) * B(k, col);  // products are exact in fp32
    d[e] = acc;
  }
}

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
      std::vector<std::unique_ptr<emu::WarpExchange>> warps;
      for (int w = 0; w < threads; w += 32) warps.push_back(std::make_unique<emu::WarpExchange>(std::min(32, threads - w)));
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          emu::ctx = {t, threads, block, blocks, smem.data(), &barrier, &warps};
          kernel(static_cast<KArgs>(args)...);
        });
      }
      for (auto& th : pool) th.join();
    }
  }
};
}  // namespace vheat::cuda

#endif
