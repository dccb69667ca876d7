// Per-plane separable DCT-II / DCT-III with the even/odd butterfly. Included by one .cpp
// per instruction set with VHEAT_ISA set and a `#pragma GCC target` in force; uses GCC
// vector extensions so the same source becomes AVX-512, AVX2+FMA or SSE2 code.
// No torch headers here: they must not be compiled under a target pragma.
#include <cstring>

#include "plane_kernels.h"

namespace vheat::cpu {
namespace VHEAT_ISA {
namespace {

// GCC drops vector_size on a dependent alias template, so spell each type out.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
static_assert(sizeof(Vec<float>) == 64 && sizeof(Vec<double>) == 64, "one 512-bit vector per lane group");

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// out[r * out_stride] = sum_k M[r][k] * in[k * in_stride] for r < R, each term a vector
// of kLanes<T> channels. RB rows at a time keep RB accumulators in registers while
// each input vector is loaded once per block.
template <typename T, int RB>
inline void rows_block(const T* __restrict M, int K, const T* __restrict in, int64_t in_stride,
                       T* __restrict out, int64_t out_stride) {
  Vec<T> acc[RB];
  for (int q = 0; q < RB; ++q) acc[q] = Vec<T>{} ;
  for (int k = 0; k < K; ++k) {
    const Vec<T> v = load(in + k * in_stride);
#pragma GCC unroll 8
    for (int q = 0; q < RB; ++q) acc[q] += M[q * K + k] * v;
  }
  for (int q = 0; q < RB; ++q) store(out + q * out_stride, acc[q]);
}

template <typename T>
void small_matmul(const T* __restrict M, int R, int K, const T* __restrict in, int64_t in_stride,
                  T* __restrict out, int64_t out_stride) {
  constexpr int kRB = VHEAT_ROW_BLOCK;
  int r = 0;
  for (; r + kRB <= R; r += kRB)
    rows_block<T, kRB>(M + int64_t(r) * K, K, in, in_stride, out + r * out_stride, out_stride);
  for (; r + 2 <= R; r += 2)
    rows_block<T, 2>(M + int64_t(r) * K, K, in, in_stride, out + r * out_stride, out_stride);
  for (; r < R; ++r) rows_block<T, 1>(M + int64_t(r) * K, K, in, in_stride, out + r * out_stride, out_stride);
}

// DCT-II of `count` vectors-of-lanes lines: line j has its N points at
// src + j * line_stride + i * point_stride, and its N outputs go to the same positions
// of dst (dst != src). `ad` is scratch for N vectors.
template <typename T>
void dct_lines(const AxisTables<T>& t, const T* src, T* dst, int count, int64_t line_stride,
               int64_t point_stride, T* ad) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* a = ad;
  T* d = ad + int64_t(ne) * L;
  for (int j = 0; j < count; ++j) {
    const T* s = src + j * line_stride;
    T* o = dst + j * line_stride;
    for (int i = 0; i < no; ++i) {
      const Vec<T> lo = load(s + i * point_stride), hi = load(s + (N - 1 - i) * point_stride);
      store(a + i * L, lo + hi);
      store(d + i * L, lo - hi);
    }
    if (N & 1) std::memcpy(a + no * L, s + no * point_stride, sizeof(T) * L);
    small_matmul(t.even, ne, ne, a, L, o, 2 * point_stride);
    small_matmul(t.odd, no, no, d, L, o + point_stride, 2 * point_stride);
  }
}

// DCT-III (inverse of dct_lines), same addressing. `eo` is scratch for N vectors.
template <typename T>
void idct_lines(const AxisTables<T>& t, const T* src, T* dst, int count, int64_t line_stride,
                int64_t point_stride, T* eo) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* e = eo;
  T* od = eo + int64_t(ne) * L;
  for (int j = 0; j < count; ++j) {
    const T* s = src + j * line_stride;
    T* o = dst + j * line_stride;
    small_matmul(t.even_t, ne, ne, s, 2 * point_stride, e, L);
    small_matmul(t.odd_t, no, no, s + point_stride, 2 * point_stride, od, L);
    for (int i = 0; i < no; ++i) {
      const Vec<T> ev = load(e + i * L), ov = load(od + i * L);
      store(o + i * point_stride, ev + ov);
      store(o + (N - 1 - i) * point_stride, ev - ov);
    }
    if (N & 1) std::memcpy(o + no * point_stride, e + no * L, sizeof(T) * L);
  }
}

}  // namespace

// plane (H, W, L) -> DCT-II over H and W, in place; scratch: plane_scratch_elems().
template <typename T>
void dct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  T* tmp = scratch;                          // (H, W, L)
  T* lines = scratch + int64_t(H) * W * L;   // butterfly vectors
  dct_lines(tw, plane, tmp, H, int64_t(W) * L, L, lines);   // along W, row by row
  dct_lines(th, tmp, plane, W, L, int64_t(W) * L, lines);   // along H, column by column
}

template <typename T>
void idct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  T* tmp = scratch;
  T* lines = scratch + int64_t(H) * W * L;
  idct_lines(th, plane, tmp, W, L, int64_t(W) * L, lines);
  idct_lines(tw, tmp, plane, H, int64_t(W) * L, L, lines);
}

template void dct2_plane<float>(const AxisTables<float>&, const AxisTables<float>&, float*, float*);
template void dct2_plane<double>(const AxisTables<double>&, const AxisTables<double>&, double*, double*);
template void idct2_plane<float>(const AxisTables<float>&, const AxisTables<float>&, float*, float*);
template void idct2_plane<double>(const AxisTables<double>&, const AxisTables<double>&, double*, double*);

}  // namespace VHEAT_ISA
}  // namespace vheat::cpu
