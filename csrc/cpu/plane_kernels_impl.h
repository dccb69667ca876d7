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

// The last R % RB rows in one block (R = 7 with RB = 8 is a single pass over the input,
// not 2 + 2 + 2 + 1).
template <typename T, int RB>
inline void rows_tail(int rows, const T* __restrict M, int K, const T* __restrict in, int64_t in_stride,
                      T* __restrict out, int64_t out_stride) {
  if constexpr (RB > 0) {
    if (rows == RB)
      rows_block<T, RB>(M, K, in, in_stride, out, out_stride);
    else
      rows_tail<T, RB - 1>(rows, M, K, in, in_stride, out, out_stride);
  }
}

template <typename T>
void small_matmul(const T* __restrict M, int R, int K, const T* __restrict in, int64_t in_stride,
                  T* __restrict out, int64_t out_stride) {
  constexpr int kRB = VHEAT_ROW_BLOCK;
  int r = 0;
  for (; r + kRB <= R; r += kRB)
    rows_block<T, kRB>(M + int64_t(r) * K, K, in, in_stride, out + r * out_stride, out_stride);
  rows_tail<T, kRB - 1>(R - r, M + int64_t(r) * K, K, in, in_stride, out + r * out_stride, out_stride);
}

template <typename T>
void dct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch);
template <typename T>
void idct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch);

// a = c (x + y), d = s (x - y) over a lane group.
template <typename T>
inline void butterfly_in(const T* x, const T* y, T* a, T* d, T c, T s) {
#pragma GCC unroll 4
  for (int v = 0; v < kSub; ++v) {
    const Vec<T> p = load(x + v * kSubLanes<T>), q = load(y + v * kSubLanes<T>);
    store(a + v * kSubLanes<T>, (p + q) * c);
    store(d + v * kSubLanes<T>, (p - q) * s);
  }
}

// x = c e + s o, y = c e - s o over a lane group.
template <typename T>
inline void butterfly_out(const T* e, const T* o, T* x, T* y, T c, T s) {
#pragma GCC unroll 4
  for (int v = 0; v < kSub; ++v) {
    const Vec<T> p = load(e + v * kSubLanes<T>) * c, q = load(o + v * kSubLanes<T>) * s;
    store(x + v * kSubLanes<T>, p + q);
    store(y + v * kSubLanes<T>, p - q);
  }
}

// (u, v) -> (cu u + cv v, du u + dv v) over a lane group.
template <typename T>
inline void rotate(const T* u, const T* v, T* x, T* y, T cu, T cv, T du, T dv) {
#pragma GCC unroll 4
  for (int k = 0; k < kSub; ++k) {
    const Vec<T> p = load(u + k * kSubLanes<T>), q = load(v + k * kSubLanes<T>);
    store(x + k * kSubLanes<T>, p * cu + q * cv);
    store(y + k * kSubLanes<T>, p * du + q * dv);
  }
}

template <typename T>
inline void scale_group(const T* src, T* dst, T c) {
#pragma GCC unroll 4
  for (int k = 0; k < kSub; ++k) store(dst + k * kSubLanes<T>, load(src + k * kSubLanes<T>) * c);
}

constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double kSqrtHalf = 0.70710678118654752440;

// DCT-IV of even length M = 2h from two DCT-II of length h. With g_n = pi (2n+1) / (4M),
// p_n = cos g_n d_n + sin g_n d_{M-1-n} and r_n = (-1)^n (cos g_n d_{M-1-n} - sin g_n d_n),
// splitting cos(pi (2n+1)(2k+1) / (4M)) at k = 2j and k = 2j-1 gives (unnormalised)
//   y_{2j} = C(p)_j + C(r)_{h-j},  y_{2j-1} = C(p)_j - C(r)_{h-j},  y_0 = C(p)_0,
//   y_{M-1} = -C(r)_0,
// where C is the DCT-II of length h (the sine half turns into C(r) read backwards).
// Here d arrives pre-scaled by 1/2, which with the orthonormal C leaves a sqrt(2) at
// both ends. Inputs d (M groups); outputs at o + k * op; `work` holds M groups, `rest`
// the recursion's scratch.
template <typename T>
void dct4_split(const AxisTables<T>& t, const T* d, T* o, int64_t op, T* work, T* rest) {
  constexpr int L = kLanes<T>;
  const int M = t.n_odd, h = M / 2;
  T* pr = work;  // p in [0, h), r in [h, M); then C(p), C(r) in place
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    rotate(d + n * L, d + (M - 1 - n) * L, pr + n * L, pr + (h + n) * L, c, sn, -sg * sn, sg * c);
  }
  dct_line(*t.quarter, pr, L, pr, L, rest);
  dct_line(*t.quarter, pr + h * L, L, pr + h * L, L, rest);
  const T* P = pr;
  const T* R = pr + h * L;
  scale_group(P, o, T(kSqrt2));
  for (int j = 1; j < h; ++j) butterfly_in(P + j * L, R + (h - j) * L, o + 2 * j * op, o + (2 * j - 1) * op, T(1), T(1));
  scale_group(R, o + (M - 1) * op, T(-kSqrt2));
}

// Transpose (= inverse) of dct4_split: inputs at s + k * sp, outputs d (M groups, still
// to be scaled by 1/2 by the caller).
template <typename T>
void idct4_split(const AxisTables<T>& t, const T* s, int64_t sp, T* d, T* work, T* rest) {
  constexpr int L = kLanes<T>;
  const int M = t.n_odd, h = M / 2;
  T* P = work;
  T* R = work + h * L;
  scale_group(s, P, T(kSqrt2));
  for (int j = 1; j < h; ++j) butterfly_in(s + 2 * j * sp, s + (2 * j - 1) * sp, P + j * L, R + (h - j) * L, T(1), T(1));
  scale_group(s + (M - 1) * sp, R, T(-kSqrt2));
  idct_line(*t.quarter, P, L, P, L, rest);
  idct_line(*t.quarter, R, L, R, L, rest);
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    rotate(P + n * L, R + n * L, d + n * L, d + (M - 1 - n) * L, c, -sg * sn, sn, sg * c);
  }
}

// DCT-II of one line of N lane groups: inputs at s + i * sp, outputs at o + k * op.
// Reads every input before writing an output, so o == s (same stride) is allowed.
// `scratch` holds 2N lane groups (this level's a/d plus the recursion's).
template <typename T>
void dct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* a = scratch;
  T* d = scratch + int64_t(ne) * L;
  T* rest = scratch + int64_t(N) * L;
  const T ca = t.half ? T(kSqrtHalf) : T(1), cd = t.quarter ? T(0.5) : T(1);
  for (int i = 0; i < no; ++i) butterfly_in(s + i * sp, s + (N - 1 - i) * sp, a + i * L, d + i * L, ca, cd);
  if (N & 1) std::memcpy(a + no * L, s + no * sp, sizeof(T) * L);
  if (t.half)
    dct_line(*t.half, a, L, o, 2 * op, rest);
  else
    small_matmul(t.even, ne, ne, a, L, o, 2 * op);
  if (t.quarter)
    dct4_split(t, d, o + op, 2 * op, a, rest);  // a is free once the even half is out
  else
    small_matmul(t.odd, no, no, d, L, o + op, 2 * op);
}

// DCT-III (inverse and transpose of dct_line), same addressing and scratch; o == s allowed.
template <typename T>
void idct_line(const AxisTables<T>& t, const T* s, int64_t sp, T* o, int64_t op, T* scratch) {
  constexpr int L = kLanes<T>;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* e = scratch;
  T* od = scratch + int64_t(ne) * L;
  T* rest = scratch + int64_t(N) * L;
  if (t.half)
    idct_line(*t.half, s, 2 * sp, e, L, rest);
  else
    small_matmul(t.even_t, ne, ne, s, 2 * sp, e, L);
  if (t.quarter)
    idct4_split(t, s + sp, 2 * sp, od, rest, rest + int64_t(no) * L);
  else
    small_matmul(t.odd_t, no, no, s + sp, 2 * sp, od, L);
  const T ce = t.half ? T(kSqrtHalf) : T(1), cd = t.quarter ? T(0.5) : T(1);
  for (int i = 0; i < no; ++i) butterfly_out(e + i * L, od + i * L, o + i * op, o + (N - 1 - i) * op, ce, cd);
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

// DCT-II over W then H into `plane` (H, padded_width(W), L). The first pass reads the
// rows from src (row h, point w at src + h * src_row + w * src_point), which may be the
// plane itself or, for full fp32 channel blocks, the channels-last input directly.
// scratch: plane_scratch_elems().
template <typename T>
void dct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, const T* src, int64_t src_row,
                int64_t src_point, T* plane, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  const int64_t row = int64_t(padded_width(W)) * L;
  for (int h = 0; h < H; ++h) dct_line(tw, src + h * src_row, src_point, plane + h * row, L, scratch);
  dct_lines(th, plane, plane, W, L, row, scratch);  // along H, column by column, in place
}

// Inverse: DCT-III over H in place, then over W from the plane into dst (same addressing
// as dct2_plane's src).
template <typename T>
void idct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* dst, int64_t dst_row,
                 int64_t dst_point, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  const int64_t row = int64_t(padded_width(W)) * L;
  idct_lines(th, plane, plane, W, L, row, scratch);
  for (int h = 0; h < H; ++h) idct_line(tw, plane + h * row, L, dst + h * dst_row, dst_point, scratch);
}

#define VHEAT_INSTANTIATE(T)                                                                            \
  template void dct2_plane<T>(const AxisTables<T>&, const AxisTables<T>&, const T*, int64_t, int64_t, T*, T*); \
  template void idct2_plane<T>(const AxisTables<T>&, const AxisTables<T>&, T*, T*, int64_t, int64_t, T*);
VHEAT_INSTANTIATE(float)
VHEAT_INSTANTIATE(double)
#undef VHEAT_INSTANTIATE

}  // namespace VHEAT_ISA
}  // namespace vheat::cpu
