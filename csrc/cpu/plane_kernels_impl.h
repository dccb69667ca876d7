// Per-plane separable DCT-II / DCT-III with the even/odd butterfly. Included by one .cpp
// per instruction set with VHEAT_ISA set and a `#pragma GCC target` in force; uses GCC
// vector extensions so the same source becomes AVX-512, AVX2+FMA or SSE2 code.
// No torch headers here: they must not be compiled under a target pragma.
#include <cstring>

#include "plane_kernels.h"

namespace vheat::cpu {
namespace VHEAT_ISA {
namespace {

// A lane group is 64 bytes (kLanes<T> channels); the ISA's native vector (VHEAT_VEC_BYTES)
// covers it in kSub pieces. Vectors wider than the target are lowered through memory
// by GCC, so never use a 64-byte type on AVX2. (GCC also drops vector_size on a
// dependent alias template, hence the explicit specialisations.)
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(VHEAT_VEC_BYTES)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(VHEAT_VEC_BYTES)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
constexpr int kSub = 64 / VHEAT_VEC_BYTES;
template <typename T>
constexpr int kSubLanes = VHEAT_VEC_BYTES / sizeof(T);

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
  constexpr int SL = kSubLanes<T>;
  Vec<T> acc[RB][kSub];
#pragma GCC unroll 8
  for (int q = 0; q < RB; ++q)
#pragma GCC unroll 4
    for (int v = 0; v < kSub; ++v) acc[q][v] = Vec<T>{};
  for (int k = 0; k < K; ++k) {
    Vec<T> x[kSub];
#pragma GCC unroll 4
    for (int v = 0; v < kSub; ++v) x[v] = load(in + k * in_stride + v * SL);
#pragma GCC unroll 8
    for (int q = 0; q < RB; ++q) {
      const T m = M[q * K + k];
#pragma GCC unroll 4
      for (int v = 0; v < kSub; ++v) acc[q][v] += m * x[v];
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < RB; ++q)
#pragma GCC unroll 4
    for (int v = 0; v < kSub; ++v) store(out + q * out_stride + v * SL, acc[q][v]);
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

// a = c (x + y), d = x - y over a lane group (c = 1/sqrt(2) when the even half recurses).
template <typename T>
inline void butterfly_in(const T* x, const T* y, T* a, T* d, T c) {
#pragma GCC unroll 4
  for (int v = 0; v < kSub; ++v) {
    const Vec<T> p = load(x + v * kSubLanes<T>), q = load(y + v * kSubLanes<T>);
    store(a + v * kSubLanes<T>, (p + q) * c);
    store(d + v * kSubLanes<T>, p - q);
  }
}

// x = c e + o, y = c e - o over a lane group.
template <typename T>
inline void butterfly_out(const T* e, const T* o, T* x, T* y, T c) {
#pragma GCC unroll 4
  for (int v = 0; v < kSub; ++v) {
    const Vec<T> p = load(e + v * kSubLanes<T>) * c, q = load(o + v * kSubLanes<T>);
    store(x + v * kSubLanes<T>, p + q);
    store(y + v * kSubLanes<T>, p - q);
  }
}

// DCT-II of one line of N lane groups: inputs at s + i * sp, outputs at o + k * op
// (o != s). `scratch` holds 2N lane groups (this level's a/d plus the recursion's).
template <typename T>
void dct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* a = scratch;
  T* d = scratch + int64_t(ne) * L;
  const T c = t.half ? T(0.70710678118654752440) : T(1);
  for (int i = 0; i < no; ++i) butterfly_in(s + i * sp, s + (N - 1 - i) * sp, a + i * L, d + i * L, c);
  if (N & 1) std::memcpy(a + no * L, s + no * sp, sizeof(T) * L);
  if (t.half)
    dct_line(*t.half, a, L, o, 2 * op, scratch + int64_t(N) * L);
  else
    small_matmul(t.even, ne, ne, a, L, o, 2 * op);
  small_matmul(t.odd, no, no, d, L, o + op, 2 * op);
}

// DCT-III (inverse of dct_line), same addressing and scratch.
template <typename T>
void idct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* e = scratch;
  T* od = scratch + int64_t(ne) * L;
  if (t.half)
    idct_line(*t.half, s, 2 * sp, e, L, scratch + int64_t(N) * L);
  else
    small_matmul(t.even_t, ne, ne, s, 2 * sp, e, L);
  small_matmul(t.odd_t, no, no, s + sp, 2 * sp, od, L);
  const T c = t.half ? T(0.70710678118654752440) : T(1);
  for (int i = 0; i < no; ++i) butterfly_out(e + i * L, od + i * L, o + i * op, o + (N - 1 - i) * op, c);
  if (N & 1) std::memcpy(o + no * op, e + no * L, sizeof(T) * L);
}

// `count` lines: line j starts at src / dst + j * line_stride, points point_stride apart.
template <typename T>
void dct_lines(const AxisTables<T>& t, const T* src, T* dst, int count, int64_t line_stride,
               int64_t point_stride, T* scratch) {
  for (int j = 0; j < count; ++j)
    dct_line(t, src + j * line_stride, point_stride, dst + j * line_stride, point_stride, scratch);
}

template <typename T>
void idct_lines(const AxisTables<T>& t, const T* src, T* dst, int count, int64_t line_stride,
                int64_t point_stride, T* scratch) {
  for (int j = 0; j < count; ++j)
    idct_line(t, src + j * line_stride, point_stride, dst + j * line_stride, point_stride, scratch);
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
