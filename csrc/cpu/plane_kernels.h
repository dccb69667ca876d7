// Declarations of the per-plane DCT kernels, compiled once per instruction set
// (plane_kernels_{generic,avx2,avx512}.cpp) and chosen at run time by hco_cpu.cpp.
//
// A "plane" is one (batch, channel-block) slice held as (H, W, L) contiguous values,
// L = kLanes<T> channels in the innermost position, so every arithmetic step is a
// full SIMD vector across channels and the cosine coefficients are scalars.
#pragma once

#include <cstdint>

namespace vheat::cpu {

template <typename T>
constexpr int kLanes = 64 / sizeof(T);  // one 512-bit vector (two 256-bit on AVX2)

// Even/odd split of the orthonormal DCT-II matrix C (N x N) of one axis.
// Since C[n][N-1-i] = (-1)^n C[n][i], even outputs only need a_i = v_i + v_{N-1-i} and
// odd outputs only d_i = v_i - v_{N-1-i}: half the multiply-adds of a dense matmul.
template <typename T>
struct AxisTables {
  int n = 0;             // axis length N
  int n_even = 0;        // ceil(N/2): even outputs, and a_i terms (the middle one for odd N)
  int n_odd = 0;         // floor(N/2): odd outputs, and d_i terms
  const T* even = nullptr;    // (n_even x n_even): C[2r][i]
  const T* odd = nullptr;     // (n_odd x n_odd):   C[2r+1][i]
  const T* even_t = nullptr;  // transposes, for the inverse (DCT-III)
  const T* odd_t = nullptr;
  // For even N >= kRecurseMin: the even outputs are DCT-II_{N/2}(a) / sqrt(2), so they
  // recurse into the half-length tables instead of the dense `even` matrix (~1.5x fewer
  // multiply-adds over all levels for N = 2^k). Null: use `even` / `even_t`.
  const AxisTables* half = nullptr;
};

constexpr int kRecurseMin = 16;

// Scratch each call needs, in elements of T (per thread).
inline int64_t plane_scratch_elems(int H, int W, int lanes) {
  const int n = H > W ? H : W;  // recursion uses N + N/2 + ... < 2N line vectors
  return (int64_t(H) * W + 4 * int64_t(n)) * lanes;
}

#define VHEAT_DECLARE_PLANE_KERNELS(ISA)                                                    \
  namespace ISA {                                                                           \
  template <typename T>                                                                     \
  void dct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* scratch);  \
  template <typename T>                                                                     \
  void idct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* scratch); \
  }

VHEAT_DECLARE_PLANE_KERNELS(generic)
VHEAT_DECLARE_PLANE_KERNELS(avx2)
VHEAT_DECLARE_PLANE_KERNELS(avx512)

}  // namespace vheat::cpu
