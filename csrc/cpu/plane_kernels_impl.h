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

// Lines transformed together. A "point" of a line is G lane groups, `gs` elements apart
// (adjacent columns in the H pass, adjacent rows in the W pass), so every coefficient
// load, loop step and level of the recursion serves G lines instead of one.
constexpr int kGroup = VHEAT_GROUP;
static_assert(kGroup <= kMaxGroup, "plane_scratch_elems assumes at most kMaxGroup lines at once");

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

// out[r * out_stride] = sum_k M[r][k] * in[k * in_stride] for r < R, each term G lane
// groups of kLanes<T> channels (in_gs / out_gs apart). RB rows at a time keep RB x G
// accumulators in registers while each input group is loaded once per block.
template <typename T, int RB, int G>
inline void rows_block(const T* __restrict M, int K, const T* __restrict in, int64_t in_stride, int64_t in_gs,
                       T* __restrict out, int64_t out_stride, int64_t out_gs) {
  constexpr int SL = kSubLanes<T>;
  const T* Mq[RB];
#pragma GCC unroll 8
  for (int q = 0; q < RB; ++q) Mq[q] = M + int64_t(q) * K;
  Vec<T> acc[RB][G][kSub];
#pragma GCC unroll 8
  for (int q = 0; q < RB; ++q)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
      for (int v = 0; v < kSub; ++v) acc[q][g][v] = Vec<T>{};
  for (int k = 0; k < K; ++k) {
    Vec<T> x[G][kSub];
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
      for (int v = 0; v < kSub; ++v) x[g][v] = load(in + k * in_stride + g * in_gs + v * SL);
#pragma GCC unroll 8
    for (int q = 0; q < RB; ++q) {
      const T m = Mq[q][k];
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
        for (int v = 0; v < kSub; ++v) acc[q][g][v] += m * x[g][v];
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < RB; ++q)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
      for (int v = 0; v < kSub; ++v) store(out + q * out_stride + g * out_gs + v * SL, acc[q][g][v]);
}

// The last R % RB rows in one block (R = 7 with RB = 8 is a single pass over the input,
// not 2 + 2 + 2 + 1).
template <typename T, int RB, int G>
inline void rows_tail(int rows, const T* __restrict M, int K, const T* __restrict in, int64_t in_stride,
                      int64_t in_gs, T* __restrict out, int64_t out_stride, int64_t out_gs) {
  if constexpr (RB > 0) {
    if (rows == RB)
      rows_block<T, RB, G>(M, K, in, in_stride, in_gs, out, out_stride, out_gs);
    else
      rows_tail<T, RB - 1, G>(rows, M, K, in, in_stride, in_gs, out, out_stride, out_gs);
  }
}

// Rows per block: as many accumulators as leave room for the inputs in the 32 (AVX-512)
// or 16 registers, so that G lines at once do not spill.
template <int G>
constexpr int row_block() {
  return G == 1 ? VHEAT_ROW_BLOCK : VHEAT_GROUP_ROW_BLOCK;
}

template <typename T, int G>
void small_matmul(const T* __restrict M, int R, int K, const T* __restrict in, int64_t in_stride, int64_t in_gs,
                  T* __restrict out, int64_t out_stride, int64_t out_gs) {
  constexpr int kRB = row_block<G>();
  int r = 0;
  for (; r + kRB <= R; r += kRB)
    rows_block<T, kRB, G>(M + int64_t(r) * K, K, in, in_stride, in_gs, out + r * out_stride, out_stride, out_gs);
  rows_tail<T, kRB - 1, G>(R - r, M + int64_t(r) * K, K, in, in_stride, in_gs, out + r * out_stride, out_stride,
                           out_gs);
}

template <typename T, int G>
void dct_line(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs, T* scratch);
template <typename T, int G>
void idct_line(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs, T* scratch);

template <typename T, int G, bool Inverse>
bool lines_in_registers(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs);

// The element offset of vector v of lane group g of a point whose groups are gs apart.
template <typename T>
inline int64_t at(int g, int64_t gs, int v) {
  return g * gs + v * kSubLanes<T>;
}

// a = c (x + y), d = s (x - y) over a point (G lane groups: x, y igs apart; a, d ogs apart).
template <typename T, int G>
inline void butterfly_in(const T* x, const T* y, int64_t igs, T* a, T* d, int64_t ogs, T c, T s) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
    for (int v = 0; v < kSub; ++v) {
      const Vec<T> p = load(x + at<T>(g, igs, v)), q = load(y + at<T>(g, igs, v));
      store(a + at<T>(g, ogs, v), (p + q) * c);
      store(d + at<T>(g, ogs, v), (p - q) * s);
    }
}

// x = c e + s o, y = c e - s o over a point.
template <typename T, int G>
inline void butterfly_out(const T* e, const T* o, int64_t igs, T* x, T* y, int64_t ogs, T c, T s) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
    for (int v = 0; v < kSub; ++v) {
      const Vec<T> p = load(e + at<T>(g, igs, v)) * c, q = load(o + at<T>(g, igs, v)) * s;
      store(x + at<T>(g, ogs, v), p + q);
      store(y + at<T>(g, ogs, v), p - q);
    }
}

// (u, v) -> (cu u + cv v, du u + dv v) over a point.
template <typename T, int G>
inline void rotate(const T* u, const T* v, int64_t igs, T* x, T* y, int64_t ogs, T cu, T cv, T du, T dv) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
    for (int k = 0; k < kSub; ++k) {
      const Vec<T> p = load(u + at<T>(g, igs, k)), q = load(v + at<T>(g, igs, k));
      store(x + at<T>(g, ogs, k), p * cu + q * cv);
      store(y + at<T>(g, ogs, k), p * du + q * dv);
    }
}

template <typename T, int G>
inline void scale_group(const T* src, int64_t sgs, T* dst, int64_t dgs, T c) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 4
    for (int k = 0; k < kSub; ++k) store(dst + at<T>(g, dgs, k), load(src + at<T>(g, sgs, k)) * c);
}

template <typename T, int G>
inline void copy_group(const T* src, int64_t sgs, T* dst, int64_t dgs) {
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) std::memcpy(dst + g * dgs, src + g * sgs, sizeof(T) * kLanes<T>);
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
// both ends. Inputs d (M points, packed: G * L apart, groups L apart); outputs at
// o + k * op (groups ogs apart); `work` holds M points, `rest` the recursion's scratch.
template <typename T, int G>
void dct4_split(const AxisTables<T>& t, const T* d, T* o, int64_t op, int64_t ogs, T* work, T* rest) {
  constexpr int L = kLanes<T>, P_ = G * L;
  const int M = t.n_odd, h = M / 2;
  T* pr = work;  // p in [0, h), r in [h, M); then C(p), C(r) in place
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    rotate<T, G>(d + n * P_, d + (M - 1 - n) * P_, L, pr + n * P_, pr + (h + n) * P_, L, c, sn, -sg * sn, sg * c);
  }
  dct_line<T, G>(*t.quarter, pr, P_, L, pr, P_, L, rest);
  dct_line<T, G>(*t.quarter, pr + h * P_, P_, L, pr + h * P_, P_, L, rest);
  const T* P = pr;
  const T* R = pr + h * P_;
  scale_group<T, G>(P, L, o, ogs, T(kSqrt2));
  for (int j = 1; j < h; ++j)
    butterfly_in<T, G>(P + j * P_, R + (h - j) * P_, L, o + 2 * j * op, o + (2 * j - 1) * op, ogs, T(1), T(1));
  scale_group<T, G>(R, L, o + (M - 1) * op, ogs, T(-kSqrt2));
}

// Transpose (= inverse) of dct4_split: inputs at s + k * sp (groups sgs apart), outputs d
// (M packed points, still to be scaled by 1/2 by the caller).
template <typename T, int G>
void idct4_split(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* d, T* work, T* rest) {
  constexpr int L = kLanes<T>, P_ = G * L;
  const int M = t.n_odd, h = M / 2;
  T* P = work;
  T* R = work + h * P_;
  scale_group<T, G>(s, sgs, P, L, T(kSqrt2));
  for (int j = 1; j < h; ++j)
    butterfly_in<T, G>(s + 2 * j * sp, s + (2 * j - 1) * sp, sgs, P + j * P_, R + (h - j) * P_, L, T(1), T(1));
  scale_group<T, G>(s + (M - 1) * sp, sgs, R, L, T(-kSqrt2));
  idct_line<T, G>(*t.quarter, P, P_, L, P, P_, L, rest);
  idct_line<T, G>(*t.quarter, R, P_, L, R, P_, L, rest);
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    rotate<T, G>(P + n * P_, R + n * P_, L, d + n * P_, d + (M - 1 - n) * P_, L, c, -sg * sn, sn, sg * c);
  }
}

// DCT-II of G lines of N points: point i of line g at s + i * sp + g * sgs, output k at
// o + k * op + g * ogs. Reads every input before writing an output, so o == s (same
// strides) is allowed. `scratch` holds 2N packed points (this level's a/d plus the
// recursion's).
template <typename T, int G>
void dct_line(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs, T* scratch) {
  if (lines_in_registers<T, G, false>(t, s, sp, sgs, o, op, ogs)) return;
  constexpr int L = kLanes<T>, P = G * L;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* a = scratch;
  T* d = scratch + int64_t(ne) * P;
  T* rest = scratch + int64_t(N) * P;
  const T ca = t.half ? T(kSqrtHalf) : T(1), cd = t.quarter ? T(0.5) : T(1);
  for (int i = 0; i < no; ++i) butterfly_in<T, G>(s + i * sp, s + (N - 1 - i) * sp, sgs, a + i * P, d + i * P, L, ca, cd);
  if (N & 1) copy_group<T, G>(s + no * sp, sgs, a + no * P, L);
  if (t.half)
    dct_line<T, G>(*t.half, a, P, L, o, 2 * op, ogs, rest);
  else
    small_matmul<T, G>(t.even, ne, ne, a, P, L, o, 2 * op, ogs);
  if (t.quarter)
    dct4_split<T, G>(t, d, o + op, 2 * op, ogs, a, rest);  // a is free once the even half is out
  else
    small_matmul<T, G>(t.odd, no, no, d, P, L, o + op, 2 * op, ogs);
}

// DCT-III (inverse and transpose of dct_line), same addressing and scratch; o == s allowed.
template <typename T, int G>
void idct_line(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs, T* scratch) {
  if (lines_in_registers<T, G, true>(t, s, sp, sgs, o, op, ogs)) return;
  constexpr int L = kLanes<T>, P = G * L;
  const int N = t.n, ne = t.n_even, no = t.n_odd;
  T* e = scratch;
  T* od = scratch + int64_t(ne) * P;
  T* rest = scratch + int64_t(N) * P;
  if (t.half)
    idct_line<T, G>(*t.half, s, 2 * sp, sgs, e, P, L, rest);
  else
    small_matmul<T, G>(t.even_t, ne, ne, s, 2 * sp, sgs, e, P, L);
  if (t.quarter)
    idct4_split<T, G>(t, s + sp, 2 * sp, sgs, od, rest, rest + int64_t(no) * P);
  else
    small_matmul<T, G>(t.odd_t, no, no, s + sp, 2 * sp, sgs, od, P, L);
  const T ce = t.half ? T(kSqrtHalf) : T(1), cd = t.quarter ? T(0.5) : T(1);
  for (int i = 0; i < no; ++i) butterfly_out<T, G>(e + i * P, od + i * P, L, o + i * op, o + (N - 1 - i) * op, ogs, ce, cd);
  if (N & 1) copy_group<T, G>(e + no * P, L, o + no * op, ogs);
}

// `count` lines: line j starts at src / dst + j * line_stride, points point_stride apart;
// kGroup lines at a time, then one at a time.
// Prefetch the G lines after `base` (points `point` apart) into L2 while the current ones
// are transformed: a strided channels-last line is otherwise a chain of cache misses.
template <typename T, int G>
inline void prefetch_lines(const T* base, int64_t line, int64_t point, int n, bool write) {
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < n; ++i) {
      if (write)
        __builtin_prefetch(base + g * line + i * point, 1, 2);
      else
        __builtin_prefetch(base + g * line + i * point, 0, 2);
    }
}

template <typename T, int G, bool Inverse>
inline void one_line(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs,
                     T* scratch) {
  if constexpr (Inverse)
    idct_line<T, G>(t, s, sp, sgs, o, op, ogs, scratch);
  else
    dct_line<T, G>(t, s, sp, sgs, o, op, ogs, scratch);
}

// `count` lines (DCT-II, or DCT-III if Inverse): line j starts at src / dst + j * *_line,
// points *_point apart; kGroup lines at a time, then one at a time. The forward prefetches
// the next group's source lines, the inverse its destination lines.
template <typename T, bool Inverse>
void transform_lines(const AxisTables<T>& t, const T* src, int64_t src_line, int64_t src_point, T* dst,
                     int64_t dst_line, int64_t dst_point, int count, T* scratch) {
  int j = 0;
  for (; j + kGroup <= count; j += kGroup) {
    if (j + 2 * kGroup <= count) {
      if constexpr (Inverse)
        prefetch_lines<T, kGroup>(dst + (j + kGroup) * dst_line, dst_line, dst_point, t.n, true);
      else
        prefetch_lines<T, kGroup>(src + (j + kGroup) * src_line, src_line, src_point, t.n, false);
    }
    one_line<T, kGroup, Inverse>(t, src + j * src_line, src_point, src_line, dst + j * dst_line, dst_point, dst_line,
                                 scratch);
  }
  for (; j < count; ++j)
    one_line<T, 1, Inverse>(t, src + j * src_line, src_point, 0, dst + j * dst_line, dst_point, 0, scratch);
}

// ---- small planes: the whole HCO of a run of channel blocks (plane_kernels.h) -----------

// y = DCT-II_N(x) of N vectors with the dense matrix C (row k at C + k * RS, column i),
// even/odd split: C[k][N-1-i] = (-1)^k C[k][i], so even rows need a_i = x_i + x_{N-1-i},
// odd rows d_i = x_i - x_{N-1-i}. For even N the even rows restricted to the first N/2
// columns are DCT-II_{N/2} / sqrt(2) (C_N[2r][i] = C_{N/2}[r][i] / sqrt(2)), so they recurse
// on C's own entries (row stride 2 RS): 74 multiply-adds for N = 14 instead of 98.
// Each output goes to put(k, y_k) as soon as it is computed: GCC does not schedule before
// register allocation on x86, so an output array stored after the transform keeps all N
// outputs live beside the a / d terms, which spills on AVX2's 16 registers.
template <typename T, int N, int RS = N, typename K, typename Put>
inline void small_dct(const K* __restrict C, const Vec<T> (&x)[N], Put&& put) {
  constexpr int no = N / 2, ne = (N + 1) / 2;
  Vec<T> a[ne], d[no > 0 ? no : 1];
#pragma GCC unroll 16
  for (int i = 0; i < no; ++i) {
    a[i] = x[i] + x[N - 1 - i];
    d[i] = x[i] - x[N - 1 - i];
  }
  if constexpr (N % 2 == 1) a[no] = x[no];
  constexpr bool recurse = N % 2 == 0 && N >= 8;
  if constexpr (recurse) small_dct<T, ne, 2 * RS>(C, a, [&](int r, const Vec<T>& v) { put(2 * r, v); });
#pragma GCC unroll 16
  for (int k = 0; k < N; ++k) {
    if (k % 2 == 1) {
      Vec<T> acc = C[k * RS] * d[0];
#pragma GCC unroll 16
      for (int i = 1; i < no; ++i) acc += C[k * RS + i] * d[i];
      put(k, acc);
    } else if constexpr (!recurse) {
      Vec<T> acc = C[k * RS] * a[0];
#pragma GCC unroll 16
      for (int i = 1; i < ne; ++i) acc += C[k * RS + i] * a[i];
      put(k, acc);
    }
  }
}

// x = DCT-III_N(X) = C^T X, with the same split (and recursion) on the output side; x_i
// goes to put(i, x_i) as above.
template <typename T, int N, int RS = N, typename K, typename Put>
inline void small_idct(const K* __restrict C, const Vec<T> (&X)[N], Put&& put) {
  constexpr int no = N / 2, ne = (N + 1) / 2;
  if constexpr (N % 2 == 0 && N >= 8) {
    Vec<T> Xe[ne], e[ne];
#pragma GCC unroll 16
    for (int r = 0; r < ne; ++r) Xe[r] = X[2 * r];
    small_idct<T, ne, 2 * RS>(C, Xe, [&](int i, const Vec<T>& v) { e[i] = v; });
#pragma GCC unroll 16
    for (int i = 0; i < no; ++i) {
      Vec<T> odd = C[RS + i] * X[1];
#pragma GCC unroll 16
      for (int k = 3; k < N; k += 2) odd += C[k * RS + i] * X[k];
      put(i, e[i] + odd);
      put(N - 1 - i, e[i] - odd);
    }
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < ne; ++i) {
      Vec<T> even = C[i] * X[0];
#pragma GCC unroll 16
      for (int k = 2; k < N; k += 2) even += C[k * RS + i] * X[k];
      if (i < no) {
        Vec<T> odd = C[RS + i] * X[1];
#pragma GCC unroll 16
        for (int k = 3; k < N; k += 2) odd += C[k * RS + i] * X[k];
        put(i, even + odd);
        put(N - 1 - i, even - odd);
      } else {
        put(i, even);
      }
    }
  }
}

// The same transforms for the longer small planes (28, 56), following dct_line's recursion
// on the axis tables with the whole line in registers (or in stack slots the compiler
// picks, which is still fewer loads and stores than dct_line's scratch at every level): the
// even half through `half`, the odd half through dct4_split's rotation and two
// quarter-length DCTs, dense blocks at the leaves. Vector operations per line (adds, multiplies
// and multiply-adds): 56 points 659 here against 1158 for small_dct's dense recursion, 28
// points 261 against 318; at 14 points small_dct is fewer (94 against 101).
template <typename T, int N, typename Put>
inline void reg_dct(const AxisTables<T>& t, const Vec<T> (&x)[N], Put&& put);
template <typename T, int N, typename Put>
inline void reg_idct(const AxisTables<T>& t, const Vec<T> (&X)[N], Put&& put);

// put(r, sum_k m[r][k] in_k) for an R x R row-major block: a dense leaf of the tree (the even or
// odd block of a short or odd length, or its transpose for the inverse).
template <typename T, int R, typename Put>
inline void reg_dense(const T* __restrict m, const Vec<T> (&in)[R], Put&& put) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    Vec<T> acc = m[r * R] * in[0];
#pragma GCC unroll 16
    for (int k = 1; k < R; ++k) acc += m[r * R + k] * in[k];
    put(r, acc);
  }
}

// y_k (k < M) of dct4_split from d (M points, pre-scaled by 1/2).
template <typename T, int M, typename Put>
inline void reg_dct4(const AxisTables<T>& t, const Vec<T> (&d)[M], Put&& put) {
  constexpr int h = M / 2;
  Vec<T> p[h], r[h], P[h], R[h];
#pragma GCC unroll 32
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    p[n] = c * d[n] + sn * d[M - 1 - n];
    r[n] = (-sg * sn) * d[n] + (sg * c) * d[M - 1 - n];
  }
  reg_dct<T, h>(*t.quarter, p, [&](int j, const Vec<T>& v) { P[j] = v; });
  reg_dct<T, h>(*t.quarter, r, [&](int j, const Vec<T>& v) { R[j] = v; });
  put(0, P[0] * T(kSqrt2));
#pragma GCC unroll 32
  for (int j = 1; j < h; ++j) {
    put(2 * j, P[j] + R[h - j]);
    put(2 * j - 1, P[j] - R[h - j]);
  }
  put(M - 1, R[0] * T(-kSqrt2));
}

// Transpose of reg_dct4 (idct4_split): d (M points, still to be scaled by 1/2).
template <typename T, int M, typename Put>
inline void reg_idct4(const AxisTables<T>& t, const Vec<T> (&s)[M], Put&& put) {
  constexpr int h = M / 2;
  Vec<T> P[h], R[h], p[h], r[h];
  P[0] = s[0] * T(kSqrt2);
#pragma GCC unroll 32
  for (int j = 1; j < h; ++j) {
    P[j] = s[2 * j] + s[2 * j - 1];
    R[h - j] = s[2 * j] - s[2 * j - 1];
  }
  R[0] = s[M - 1] * T(-kSqrt2);
  reg_idct<T, h>(*t.quarter, P, [&](int i, const Vec<T>& v) { p[i] = v; });
  reg_idct<T, h>(*t.quarter, R, [&](int i, const Vec<T>& v) { r[i] = v; });
#pragma GCC unroll 32
  for (int n = 0; n < h; ++n) {
    const T c = t.rot_cos[n], sn = t.rot_sin[n], sg = (n & 1) ? T(-1) : T(1);
    put(n, c * p[n] + (-sg * sn) * r[n]);
    put(M - 1 - n, sn * p[n] + (sg * c) * r[n]);
  }
}

template <typename T, int N, typename Put>
inline void reg_dct(const AxisTables<T>& t, const Vec<T> (&x)[N], Put&& put) {
  constexpr int no = N / 2, ne = (N + 1) / 2;
  constexpr bool half = N % 2 == 0 && N >= kRecurseMin, quarter = half && no % 2 == 0;
  Vec<T> a[ne], d[no];
#pragma GCC unroll 32
  for (int i = 0; i < no; ++i) {
    a[i] = x[i] + x[N - 1 - i];
    d[i] = x[i] - x[N - 1 - i];
    if constexpr (half) a[i] *= T(kSqrtHalf);
    if constexpr (quarter) d[i] *= T(0.5);
  }
  if constexpr (N % 2 == 1) a[no] = x[no];
  if constexpr (half) {
    reg_dct<T, ne>(*t.half, a, [&](int r, const Vec<T>& v) { put(2 * r, v); });
  } else {
    reg_dense<T, ne>(t.even, a, [&](int r, const Vec<T>& v) { put(2 * r, v); });
  }
  if constexpr (quarter) {
    reg_dct4<T, no>(t, d, [&](int j, const Vec<T>& v) { put(2 * j + 1, v); });
  } else {
    reg_dense<T, no>(t.odd, d, [&](int r, const Vec<T>& v) { put(2 * r + 1, v); });
  }
}

template <typename T, int N, typename Put>
inline void reg_idct(const AxisTables<T>& t, const Vec<T> (&X)[N], Put&& put) {
  constexpr int no = N / 2, ne = (N + 1) / 2;
  constexpr bool half = N % 2 == 0 && N >= kRecurseMin, quarter = half && no % 2 == 0;
  Vec<T> Xe[ne], Xo[no], e[ne], od[no];
#pragma GCC unroll 32
  for (int r = 0; r < ne; ++r) Xe[r] = X[2 * r];
#pragma GCC unroll 32
  for (int r = 0; r < no; ++r) Xo[r] = X[2 * r + 1];
  if constexpr (half) {
    reg_idct<T, ne>(*t.half, Xe, [&](int i, const Vec<T>& v) { e[i] = v * T(kSqrtHalf); });
  } else {
    reg_dense<T, ne>(t.even_t, Xe, [&](int i, const Vec<T>& v) { e[i] = v; });
  }
  if constexpr (quarter) {
    reg_idct4<T, no>(t, Xo, [&](int i, const Vec<T>& v) { od[i] = v * T(0.5); });
  } else {
    reg_dense<T, no>(t.odd_t, Xo, [&](int i, const Vec<T>& v) { od[i] = v; });
  }
#pragma GCC unroll 32
  for (int i = 0; i < no; ++i) {
    put(i, e[i] + od[i]);
    put(N - 1 - i, e[i] - od[i]);
  }
  if constexpr (N % 2 == 1) put(no, e[no]);
}

// dct_line / idct_line of G lines whose length has a register tree: each vector of the
// lines loaded whole, transformed by reg_dct / reg_idct and stored (all loads before the
// first store, so o == s is allowed). The per-plane path's lines of 128 and 256 points end
// here from their 64- or 32-point halves and quarters instead of recursing through scratch.
template <typename T, int N, int G, bool Inverse>
inline void lines_in_registers_n(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op,
                                 int64_t ogs) {
#pragma GCC unroll 1
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 1
    for (int v = 0; v < kSub; ++v) {
      Vec<T> x[N];
#pragma GCC unroll 64
      for (int i = 0; i < N; ++i) x[i] = load(s + i * sp + at<T>(g, sgs, v));
      const auto put = [&](int k, const Vec<T>& y) { store(o + k * op + at<T>(g, ogs, v), y); };
      if constexpr (Inverse)
        reg_idct<T, N>(t, x, put);
      else
        reg_dct<T, N>(t, x, put);
    }
}

template <typename T, int G, bool Inverse>
bool lines_in_registers(const AxisTables<T>& t, const T* s, int64_t sp, int64_t sgs, T* o, int64_t op, int64_t ogs) {
  switch (t.n) {
    case 16: lines_in_registers_n<T, 16, G, Inverse>(t, s, sp, sgs, o, op, ogs); return true;
    case 28: lines_in_registers_n<T, 28, G, Inverse>(t, s, sp, sgs, o, op, ogs); return true;
    case 32: lines_in_registers_n<T, 32, G, Inverse>(t, s, sp, sgs, o, op, ogs); return true;
    case 56: lines_in_registers_n<T, 56, G, Inverse>(t, s, sp, sgs, o, op, ogs); return true;
#if VHEAT_VEC_BYTES == 64
    case 64: lines_in_registers_n<T, 64, G, Inverse>(t, s, sp, sgs, o, op, ogs); return true;
#endif
    default: return false;
  }
}

// Prefetch the points (h, w) of a channels-last image row (n points `point` apart, at
// `base`) into L1 (for writing with Write), one sweep step ahead of their use.
template <bool Write, int N, typename T>
inline void prefetch_points(const T* base, int64_t point) {
#pragma GCC unroll 16
  for (int i = 0; i < N; ++i) __builtin_prefetch(base + i * point, Write ? 1 : 0, 3);
}

// The dense N x N cosine matrix as the small transforms read it. With AVX-512 a scalar
// coefficient is a free {1to16} memory operand of the multiply-add; AVX2 has no broadcast
// operand, so each coefficient would cost a vbroadcastss beside its FMA (one load more per
// FMA, and a register): there the matrix is broadcast once per run into whole vectors that
// the FMAs read directly.
// Sides above kDenseSideMax take the reg_dct / reg_idct tree and have no dense matrix.
#if VHEAT_VEC_BYTES == 32
template <typename T, int N, bool Dense = (N <= kDenseSideMax)>
struct Coefs {
  Vec<T> c[N * N];
  explicit Coefs(const T* m) {
    for (int i = 0; i < N * N; ++i) c[i] = Vec<T>{} + m[i];
  }
};
#else
template <typename T, int N, bool Dense = (N <= kDenseSideMax)>
struct Coefs {
  const T* c;
  explicit Coefs(const T* m) : c(m) {}
};
#endif
template <typename T, int N>
struct Coefs<T, N, false> {
  explicit Coefs(const T*) {}
};

// One axis of a small run: its tables, and the dense matrix as the small transforms read it.
template <typename T, int N>
struct SmallAxis {
  const AxisTables<T>& t;
  const Coefs<T, N> c;
  explicit SmallAxis(const AxisTables<T>& tables) : t(tables), c(tables.dense) {}
  template <typename Put>
  void dct(const Vec<T> (&x)[N], Put&& put) const {
    if constexpr (N <= kDenseSideMax)
      small_dct<T, N>(c.c, x, put);
    else
      reg_dct<T, N>(t, x, put);
  }
  template <typename Put>
  void idct(const Vec<T> (&x)[N], Put&& put) const {
    if constexpr (N <= kDenseSideMax)
      small_idct<T, N>(c.c, x, put);
    else
      reg_idct<T, N>(t, x, put);
  }
};

// The parts a run uses are template flags (WriteSpectrum: a.spectrum, Acc: a.acc, SavedIsSpectrum:
// a.saved_is_spectrum, Dst: a.dst), and the pointers are copied into locals: with runtime
// flags and the struct behind a reference (which a store through T* may alias), the
// unrolled sweeps kept every pointer live, ran out of general registers and reloaded them
// from the stack around each vector load and store.
template <typename T, int H, int W, bool WriteSpectrum, bool Acc, bool SavedIsSpectrum, bool Dst>
void small_run(const SmallRunArgs<T>& a) {
  constexpr int L = kLanes<T>, SL = kSubLanes<T>;
  constexpr int64_t P = int64_t(H) * W * L;  // one block's plane in work, (H, W, L)
  constexpr bool saved_rows = Acc && !SavedIsSpectrum;
  const int64_t srow = a.src_row, spoint = a.src_point, saved_row = a.saved_row, saved_point = a.saved_point;
  const int64_t orow = a.out_row, opoint = a.out_point, erow = W * a.Ce, epoint = a.Ce;
  const int blocks = a.blocks;
  const T* const src = a.src;
  const T* const saved = a.saved;
  const T* const e = a.e;
  T* const dst = a.dst;
  T* const spectrum = a.spectrum;
  T* const acc = a.acc;
  T* const plane = a.work;                       // (blocks, H, W, L)
  T* const saved_plane = a.work + int64_t(blocks) * P;  // the same for a spatial saved
  const SmallAxis<T, H> ch(*a.th);
  const SmallAxis<T, W> cw(*a.tw);
  // 1. Row transforms from the source (and a spatial saved), image row by image row, blocks
  // innermost; the next row is prefetched.
  for (int h = 0; h < H; ++h)
    for (int g = 0; g < blocks; ++g) {
      const int64_t o = int64_t(g) * L;
      if (h + 1 < H) {
        prefetch_points<false, W>(src + (h + 1) * srow + o, spoint);
        if constexpr (saved_rows) prefetch_points<false, W>(saved + (h + 1) * saved_row + o, saved_point);
      }
#pragma GCC unroll 2
      for (int v = 0; v < kSub; ++v) {
        T* out = plane + g * P + h * W * L + v * SL;
        Vec<T> x[W];
#pragma GCC unroll 64
        for (int w = 0; w < W; ++w) x[w] = load(src + h * srow + w * spoint + o + v * SL);
        cw.dct(x, [&](int w, const Vec<T>& y) { store(out + w * L, y); });
        if constexpr (saved_rows) {
          T* saved_out = saved_plane + g * P + h * W * L + v * SL;
#pragma GCC unroll 64
          for (int w = 0; w < W; ++w) x[w] = load(saved + h * saved_row + w * saved_point + o + v * SL);
          cw.dct(x, [&](int w, const Vec<T>& y) { store(saved_out + w * L, y); });
        }
      }
    }
  // 2. Column transforms, the spectrum's uses, attenuation and inverse column transforms:
  // image column by image column, blocks innermost, so E, the spectrum and acc stream too.
  for (int m = 0; m < W; ++m)
    for (int g = 0; g < blocks; ++g) {
      const int64_t o = int64_t(g) * L;
      if (m + 1 < W) {
        if constexpr (Dst) prefetch_points<false, H>(e + (m + 1) * epoint + o, erow);
        if constexpr (WriteSpectrum) prefetch_points<true, H>(spectrum + (m + 1) * opoint + o, orow);
        if constexpr (Acc) {
          if constexpr (SavedIsSpectrum) prefetch_points<false, H>(saved + (m + 1) * saved_point + o, saved_row);
          prefetch_points<true, H>(acc + (m + 1) * epoint + o, erow);
        }
      }
#pragma GCC unroll 2
      for (int v = 0; v < kSub; ++v) {
        const int64_t p = g * P + m * L + v * SL, oo = m * opoint + o + v * SL, ox = m * saved_point + o + v * SL,
                      oe = m * epoint + o + v * SL;
        Vec<T> col[H], X[H], SAVED[H];
        if constexpr (saved_rows) {  // DCT2(saved) by columns too, before the spectrum it multiplies
#pragma GCC unroll 64
          for (int n = 0; n < H; ++n) col[n] = load(saved_plane + p + n * W * L);
          ch.dct(col, [&](int n, const Vec<T>& y) { SAVED[n] = y; });
        }
#pragma GCC unroll 64
        for (int n = 0; n < H; ++n) col[n] = load(plane + p + n * W * L);
        // Each spectrum value is used (written out, accumulated, attenuated) as it comes.
        ch.dct(col, [&](int n, const Vec<T>& y) {
          if constexpr (WriteSpectrum) store(spectrum + oo + n * orow, y);
          if constexpr (Acc) {
            T* q = acc + oe + n * erow;
            store(q, load(q) + (saved_rows ? SAVED[n] : load(saved + ox + n * saved_row)) * y);
          }
          if constexpr (Dst) X[n] = y * load(e + oe + n * erow);
        });
        if constexpr (Dst) ch.idct(X, [&](int n, const Vec<T>& y) { store(plane + p + n * W * L, y); });
      }
    }
  if constexpr (!Dst) return;
  // 3. Inverse row transforms out to dst, like the first sweep.
  for (int h = 0; h < H; ++h)
    for (int g = 0; g < blocks; ++g) {
      const int64_t o = int64_t(g) * L;
      if (h + 1 < H) prefetch_points<true, W>(dst + (h + 1) * orow + o, opoint);
#pragma GCC unroll 2
      for (int v = 0; v < kSub; ++v) {
        T* out = dst + h * orow + o + v * SL;
        Vec<T> x[W];
#pragma GCC unroll 64
        for (int w = 0; w < W; ++w) x[w] = load(plane + g * P + (h * W + w) * L + v * SL);
        cw.idct(x, [&](int w, const Vec<T>& y) { store(out + w * opoint, y); });
      }
    }
}

// The combinations hco_cpu.cpp runs: a forward (y, and DCT2(x) for training) or a backward
// (dE, from the saved spectrum or from x, with or without dx).
template <typename T, int H, int W>
void small_run_parts(const SmallRunArgs<T>& a) {
  if (!a.acc) {
    if (a.spectrum)
      small_run<T, H, W, true, false, false, true>(a);
    else
      small_run<T, H, W, false, false, false, true>(a);
  } else if (a.saved_is_spectrum) {
    if (a.dst)
      small_run<T, H, W, false, true, true, true>(a);
    else
      small_run<T, H, W, false, true, true, false>(a);
  } else {
    if (a.dst)
      small_run<T, H, W, false, true, false, true>(a);
    else
      small_run<T, H, W, false, true, false, false>(a);
  }
}

}  // namespace

template <typename T>
void small_run_hco(int H, int W, const SmallRunArgs<T>& a) {
  if (H == 7 && W == 7)
    small_run_parts<T, 7, 7>(a);
  else if (H == 14 && W == 14)
    small_run_parts<T, 14, 14>(a);
  else if (H == 28 && W == 28)
    small_run_parts<T, 28, 28>(a);
  else if (H == 56 && W == 56)
    small_run_parts<T, 56, 56>(a);
}

// DCT-II over W then H into `plane` (H, padded_width(W), L). The first pass reads the
// rows from src (row h, point w at src + h * src_row + w * src_point), which may be the
// plane itself or, for full channel blocks already in T, the channels-last input directly
// (at its own row and point strides: a view is read in place).
// scratch: plane_scratch_elems().
template <typename T>
void dct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, const T* src, int64_t src_row,
                int64_t src_point, T* plane, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  const int64_t row = int64_t(padded_width(W)) * L;
  transform_lines<T, false>(tw, src, src_row, src_point, plane, row, L, H, scratch);  // along W, row by row
  transform_lines<T, false>(th, plane, L, row, plane, L, row, W, scratch);            // along H, columns, in place
}

// Inverse: DCT-III over H in place, then over W from the plane into dst (same addressing
// as dct2_plane's src).
template <typename T>
void idct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* dst, int64_t dst_row,
                 int64_t dst_point, T* scratch) {
  constexpr int L = kLanes<T>;
  const int H = th.n, W = tw.n;
  const int64_t row = int64_t(padded_width(W)) * L;
  transform_lines<T, true>(th, plane, L, row, plane, L, row, W, scratch);
  transform_lines<T, true>(tw, plane, row, L, dst, dst_row, dst_point, H, scratch);
}

#define VHEAT_INSTANTIATE(T)                                                                            \
  template void dct2_plane<T>(const AxisTables<T>&, const AxisTables<T>&, const T*, int64_t, int64_t, T*, T*); \
  template void idct2_plane<T>(const AxisTables<T>&, const AxisTables<T>&, T*, T*, int64_t, int64_t, T*); \
  template void small_run_hco<T>(int, int, const SmallRunArgs<T>&);
VHEAT_INSTANTIATE(float)
VHEAT_INSTANTIATE(double)
#undef VHEAT_INSTANTIATE

}  // namespace VHEAT_ISA
}  // namespace vheat::cpu
