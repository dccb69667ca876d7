// Device kernels of the Heat Conduction Operator (HCO) for channels-last x (B, H, W, C):
//   y[b, :, :, c] = C_H^T ((C_H x[b, :, :, c] C_W^T) * E[:, :, c]) C_W
// with the orthonormal DCT-II matrices C_N[k, i] = s_k cos(pi (2i + 1) k / 2N).
// Every kernel computes in acc_t, compute_type_t of its storage type (csrc/compute_dtype.h:
// fp32, or fp64 for double inputs); see docs/cuda.md.
//
// Two strategies (chosen on the host by hco_plan.h):
//  * fused plane kernels: one block owns a (batch, tile of tc channels) plane, reads it
//    from global memory once into shared memory, applies all four 1-D transforms there
//    (cosine matrices built in shared memory by the block itself, so the forward is one
//    launch) and writes the result once; the backward kernel walks a chunk of batch
//    elements, writing dx and accumulating its chunk's dE partial;
//  * line kernels, for planes too large for shared memory: one 1-D transform per pass
//    over an fp32/fp64 workspace, one block per (line, channel tile).
#pragma once

#include "device_compat.cuh"
#include "hco_plan.h"

namespace vheat::cuda {

// Outputs per work item in transform_axis along the transformed axis (they share each
// load of the input), and, in the fused kernels, along the other axis of the plane (they
// share each load of the matrix). Line kernels have a single line: other tile 1.
constexpr int kMicroTile = 4;
constexpr int kFusedOtherTile = 2;
// Upper bound of threads per block used by every kernel (the host never asks for more).
constexpr int kMaxThreads = 256;

// C_n[k, i] = s_k cos(pi (2i + 1) k / 2n) from the exact integer phase r = (2i + 1) k
// mod 4n, folded into the first quarter period: C_n[0, i] = 1 / sqrt(n) and, for k >= 1,
// C_n[k, i] = +-Q_n[j] with Q_n[j] = sqrt(2 / n) cos(pi j / 2n), j in [0, n]. Q is computed
// in double and rounded once, so fp32 entries are correctly rounded whatever
// --use_fast_math does to single-precision division and rsqrt; the fused kernels build
// their matrices from n + 2 such values per block (cheap enough to redo in every block,
// which saves a table launch per call), the line path's tables hold the same values.
VHEAT_DEVICE double dct_quarter(int j, int n) { return rsqrt_of(double(n) / 2.0) * cos_pi(double(j) / double(2 * n)); }
VHEAT_DEVICE double dct_row0(int n) { return rsqrt_of(double(n)); }

// C_n[k, i] from quarter[0..n] = Q_n and quarter[n + 1] = 1 / sqrt(n) (any real type).
template <typename real_t>
VHEAT_DEVICE real_t dct_from_quarter(const real_t* quarter, int k, int i, int n) {
  if (k == 0) return quarter[n + 1];
  const int r = ((2 * i + 1) * k) % (4 * n);
  if (r <= n) return quarter[r];
  if (r <= 2 * n) return -quarter[2 * n - r];
  if (r <= 3 * n) return -quarter[r - 2 * n];
  return quarter[4 * n - r];
}

template <typename real_t>
VHEAT_DEVICE real_t dct_coef(int k, int i, int n) {
  if (k == 0) return static_cast<real_t>(dct_row0(n));
  const int r = ((2 * i + 1) * k) % (4 * n);
  if (r <= n) return static_cast<real_t>(dct_quarter(r, n));
  if (r <= 2 * n) return static_cast<real_t>(-dct_quarter(2 * n - r, n));
  if (r <= 3 * n) return static_cast<real_t>(-dct_quarter(r - 2 * n, n));
  return static_cast<real_t>(dct_quarter(4 * n - r, n));
}

// Step 1 of building C_n in shared memory: quarter[0..n + 1] (n + 2 values).
template <typename acc_t>
VHEAT_DEVICE void fill_quarter(acc_t* quarter, int n) {
  for (int j = thread_index(); j <= n + 1; j += block_size())
    quarter[j] = static_cast<acc_t>(j == n + 1 ? dct_row0(n) : dct_quarter(j, n));
}

// Step 2 (after a VHEAT_SYNC): mat[k * ld + i] = C_n[k, i].
template <typename acc_t>
VHEAT_DEVICE void fill_dct_matrix(const acc_t* quarter, acc_t* mat, int n, int ld) {
  for (int idx = thread_index(); idx < n * n; idx += block_size()) {
    const int k = idx / n, i = idx - k * n;
    mat[k * ld + i] = dct_from_quarter(quarter, k, i, n);
  }
}

// out(o, j, c) = sum_i M(j, i) * in(o, i, c) for o < n_other, j < n, c < tc, where the
// input element (o, i, c) lives at in[o * so + i * si + c] and M(j, i) = mat[j * mj + i * mi]
// (mj = ld, mi = 1 applies C_n; mj = 1, mi = ld applies C_n^T). Each work item computes a
// RO x kMicroTile register tile (RO consecutive o, kMicroTile consecutive j) for one c and
// hands every result to epi(o, j, c, value): per step of i it loads RO inputs and
// kMicroTile matrix entries for RO * kMicroTile FMAs. Consecutive threads take consecutive
// c, so reads of `in` are contiguous or broadcast.
template <int RO, typename acc_t, typename Epilogue>
VHEAT_DEVICE void transform_axis(const acc_t* in, int n_other, int so, int n, int si, int tc,
                                 const acc_t* mat, int mj, int mi, Epilogue epi) {
  const int groups = (n + kMicroTile - 1) / kMicroTile;
  const int ogroups = (n_other + RO - 1) / RO;
  const int items = ogroups * groups * tc;
  for (int item = thread_index(); item < items; item += block_size()) {
    const int c = item % tc;
    const int rest = item / tc;
    const int g = rest % groups;
    const int o0 = (rest / groups) * RO;
    const int j0 = g * kMicroTile;
    // Rows / lines past the end are clamped to the last one and their results dropped.
    const acc_t* lines[RO];
#pragma unroll
    for (int q = 0; q < RO; ++q) lines[q] = in + (o0 + q < n_other ? o0 + q : n_other - 1) * so + c;
    const acc_t* rows[kMicroTile];
#pragma unroll
    for (int r = 0; r < kMicroTile; ++r) rows[r] = mat + (j0 + r < n ? j0 + r : n - 1) * mj;
    acc_t acc[RO][kMicroTile];
#pragma unroll
    for (int q = 0; q < RO; ++q)
#pragma unroll
      for (int r = 0; r < kMicroTile; ++r) acc[q][r] = acc_t(0);
    for (int i = 0; i < n; ++i) {
      acc_t v[RO];
#pragma unroll
      for (int q = 0; q < RO; ++q) v[q] = lines[q][i * si];
#pragma unroll
      for (int r = 0; r < kMicroTile; ++r) {
        const acc_t m = rows[r][i * mi];
#pragma unroll
        for (int q = 0; q < RO; ++q) acc[q][r] += m * v[q];
      }
    }
#pragma unroll
    for (int q = 0; q < RO; ++q)
#pragma unroll
      for (int r = 0; r < kMicroTile; ++r)
        if (o0 + q < n_other && j0 + r < n) epi(o0 + q, j0 + r, c, acc[q][r]);
  }
}

// How the fused kernels multiply for each input type: fp64 on FMA units (transform_axis),
// fp32 as 3xTF32 on tensor cores, bf16 / fp16 on tensor cores with fp32 accumulation
// (transform_axis_mma). hco_cuda_kernels.cu adds the 16-bit types (c10::BFloat16, Half).
template <typename scalar_t>
struct MmaKindOf {
  static constexpr MmaKind value = MmaKind::kFma;
};
template <>
struct MmaKindOf<float> {
  static constexpr MmaKind value = MmaKind::kTf32x3;
};

// Columns (n tiles of 8) of one warp's output strip: the A fragments of a k step are
// loaded once for all of them.
constexpr int kMmaStripTiles = 4;

// transform_axis on tensor cores: the same contract (out(o, j, c) = sum_i M(j, i) in(o, i, c),
// results to epi), as the GEMM D (n x N) = M (n x n) * In (n x N) with N = n_other * tc
// columns q = o * tc + c. A warp owns a 16 x (8 * kMmaStripTiles) strip of D and walks k
// in steps of the MMA depth; rows, k and columns past the end are zero-filled and their
// results dropped. Precision: the cosine matrix M is split into hi + lo parts of the
// MMA type (both multiplied), so only the data operand is rounded: to bf16 / fp16 for
// those kinds; for kTf32x3 both operands are split and hi*lo + lo*hi + hi*hi summed
// (3xTF32: about fp32 accuracy). Must be called by whole warps (block of 32k threads).
// load_a(j0, k0, ahi, alo) fills this lane's A fragments (hi and lo parts) of the 16-row
// tile j0 at depth k0 (transform_axis_mma: gathered and split here; the fused 16-bit
// kernels: ldmatrix from pre-split matrices, SplitMatrix16 below).
template <MmaKind K, typename acc_t, typename ALoader, typename Epilogue>
VHEAT_DEVICE void transform_axis_mma_with(const acc_t* in, int n_other, int so, int n, int si, int tc,
                                          ALoader load_a, Epilogue epi) {
  constexpr int kDepth = K == MmaKind::kTf32x3 ? 8 : 16;
  constexpr int NT = kMmaStripTiles;
  const int N = n_other * tc;
  const int mtiles = (n + 15) / 16, strips = (N + 8 * NT - 1) / (8 * NT);
  const int lane = lane_index(), g = lane >> 2, t = lane & 3;
  const int warps = block_size() >> 5;
  for (int item = thread_index() >> 5; item < mtiles * strips; item += warps) {
    const int j0 = (item % mtiles) * 16, q0 = (item / mtiles) * 8 * NT;
    // This lane's B column in each n tile: q = q0 + 8 nt + g.
    int colbase[NT];
    bool colok[NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int q = q0 + 8 * nt + g;
      colok[nt] = q < N;
      const int o = q / tc, c = q - o * tc;
      colbase[nt] = colok[nt] ? o * so + c : 0;
    }
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
    for (int k0 = 0; k0 < n; k0 += kDepth) {
      uint32_t ahi[4], alo[4];
      load_a(j0, k0, ahi, alo);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if (q0 + 8 * nt >= N) break;  // tile wholly past the columns (warp-uniform): no MMA
        auto Bv = [&](int k) -> float { return colok[nt] && k < n ? float(in[colbase[nt] + k * si]) : 0.0f; };
        uint32_t bhi[2];
        if constexpr (K == MmaKind::kTf32x3) {
          uint32_t blo[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float v = Bv(k0 + t + 4 * r);
            bhi[r] = to_tf32(v);
            blo[r] = to_tf32(v - tf32_value(bhi[r]));
          }
          mma_sync<K>(acc[nt], alo, bhi);  // small terms first
          mma_sync<K>(acc[nt], ahi, blo);
          mma_sync<K>(acc[nt], ahi, bhi);
        } else {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int k = k0 + 2 * t + 8 * r;
            bhi[r] = pack_16x2<K>(Bv(k), Bv(k + 1));
          }
          mma_sync<K>(acc[nt], alo, bhi);
          mma_sync<K>(acc[nt], ahi, bhi);
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = j0 + g + 8 * (e >> 1), q = q0 + 8 * nt + 2 * t + (e & 1);
        if (row < n && q < N) {
          const int o = q / tc;
          epi(o, row, q - o * tc, static_cast<acc_t>(acc[nt][e]));
        }
      }
  }
}

// transform_axis_mma with M(j, i) = mat[j * mj + i * mi] (any memory), gathered per
// fragment element and split into hi + lo at each k step.
template <MmaKind K, typename acc_t, typename Epilogue>
VHEAT_DEVICE void transform_axis_mma(const acc_t* in, int n_other, int so, int n, int si, int tc,
                                     const acc_t* mat, int mj, int mi, Epilogue epi) {
  const int lane = lane_index(), g = lane >> 2, t = lane & 3;
  auto A = [&](int row, int k) -> float { return row < n && k < n ? float(mat[row * mj + k * mi]) : 0.0f; };
  auto load_a = [&](int j0, int k0, uint32_t(&ahi)[4], uint32_t(&alo)[4]) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = j0 + g + 8 * (r & 1);
      if constexpr (K == MmaKind::kTf32x3) {
        const float v = A(row, k0 + t + 4 * (r >> 1));
        ahi[r] = to_tf32(v);
        alo[r] = to_tf32(v - tf32_value(ahi[r]));
      } else {
        const int k = k0 + 2 * t + 8 * (r >> 1);
        const float v0 = A(row, k), v1 = A(row, k + 1);
        const float h0 = round_16<K>(v0), h1 = round_16<K>(v1);
        ahi[r] = pack_16x2<K>(h0, h1);
        alo[r] = pack_16x2<K>(v0 - h0, v1 - h1);
      }
    }
  };
  transform_axis_mma_with<K>(in, n_other, so, n, si, tc, load_a, epi);
}

// C_n split into hi + lo parts of a 16-bit type, each stored row-major (S[k][i] = C_n[k, i])
// over n16 = n rounded up to 16 rows and columns, zero past n, with ld = n16 + 8: rows are
// 16-byte aligned for ldmatrix, and the 8 rows of one 8 x 8 matrix (ld * 2 bytes apart, 16
// bytes mod 128) hit 8 different 16-byte bank groups.
struct SplitMatrix16 {
  const uint16_t* hi;
  const uint16_t* lo;
  int ld;
};

// transform_axis_mma for the 16-bit kinds with A fragments loaded by ldmatrix.x4 from a
// SplitMatrix16: M = C_n (inverse false: rows of S, plain) or M = C_n^T (inverse true:
// .trans), the same two MMAs (lo, then hi) per tile as transform_axis_mma.
template <MmaKind K, typename acc_t, typename Epilogue>
VHEAT_DEVICE void transform_axis_mma_ldsm(const acc_t* in, int n_other, int so, int n, int si, int tc,
                                          const SplitMatrix16& m, bool inverse, Epilogue epi) {
  static_assert(is_16bit(K), "ldmatrix fragments are for the 16-bit kinds");
  // Lane l addresses row l % 8 of fragment matrix r = l / 8, which covers rows j0 + 8 (r & 1)
  // and depths k0 + 8 (r >> 1) of M (see device_compat.cuh for the fragment layout).
  const int lane = lane_index(), r = lane >> 3, rr = lane & 7;
  auto load_a = [&](int j0, int k0, uint32_t(&ahi)[4], uint32_t(&alo)[4]) {
    const int j = j0 + 8 * (r & 1), k = k0 + 8 * (r >> 1);
    if (inverse) {  // M(j, k) = S[k][j]: 8 x 8 blocks of S with rows k, transposed by ldmatrix
      const int off = (k + rr) * m.ld + j;
      ldmatrix_x4<true>(ahi, m.hi + off);
      ldmatrix_x4<true>(alo, m.lo + off);
    } else {  // M(j, k) = S[j][k]
      const int off = (j + rr) * m.ld + k;
      ldmatrix_x4<false>(ahi, m.hi + off);
      ldmatrix_x4<false>(alo, m.lo + off);
    }
  };
  transform_axis_mma_with<K>(in, n_other, so, n, si, tc, load_a, epi);
}

// One 1-D transform on the units K names (FMA: register tiles of RO lines x 4 outputs).
template <MmaKind K, int RO, typename acc_t, typename Epilogue>
VHEAT_DEVICE void transform_on(const acc_t* in, int n_other, int so, int n, int si, int tc, const acc_t* mat, int mj,
                               int mi, Epilogue epi) {
  if constexpr (K == MmaKind::kFma) {
    transform_axis<RO>(in, n_other, so, n, si, tc, mat, mj, mi, epi);
  } else {
    transform_axis_mma<K>(in, n_other, so, n, si, tc, mat, mj, mi, epi);
  }
}

// Gathers the (H*W, tc) channel tile starting at channel c0 of one channels-last plane
// into tile[p * tc + c] in acc_t; channels past C are zero. Element (h, w, c) of the plane
// is at plane[h * sh + w * sw + c] (channel stride 1, any row / pixel strides: the op
// reads chunk views of a wider tensor in place). When whole 16-byte vectors of channels
// line up (tc, C, sh and sw multiples of 16 / sizeof(scalar_t), plane 16-byte aligned:
// the usual vHeat case, strided or not), each thread loads 16 bytes at once (LDG.128), so
// consecutive threads read consecutive 16-byte pieces of the pixel's channel row.
template <typename scalar_t, typename acc_t>
VHEAT_DEVICE void load_plane_tile(const scalar_t* plane, int H, int W, int64_t sh, int64_t sw, int C, int c0, int tc,
                                  acc_t* tile) {
  constexpr int V = 16 / sizeof(scalar_t);
  const int hw = H * W;
  if (tc % V == 0 && C % V == 0 && sh % V == 0 && sw % V == 0 && reinterpret_cast<uintptr_t>(plane) % 16 == 0) {
    const int vt = tc / V;
    for (int idx = thread_index(); idx < hw * vt; idx += block_size()) {
      const int p = idx / vt, c = (idx - p * vt) * V;
      const int h = p / W, w = p - h * W;
      scalar_t v[V];
      if (c0 + c < C) load_16_bytes(plane + h * sh + w * sw + c0 + c, v);  // C % V == 0: all V in range
#pragma unroll
      for (int k = 0; k < V; ++k) tile[p * tc + c + k] = c0 + c < C ? static_cast<acc_t>(v[k]) : acc_t(0);
    }
    return;
  }
  for (int idx = thread_index(); idx < hw * tc; idx += block_size()) {
    const int p = idx / tc, c = idx - p * tc;
    const int h = p / W, w = p - h * W;
    tile[idx] = c0 + c < C ? static_cast<acc_t>(plane[h * sh + w * sw + c0 + c]) : acc_t(0);
  }
}

// ---- fused plane kernels -----------------------------------------------------------
// Shared memory (fused_smem_bytes() in hco_plan.h), from the 16-byte aligned base:
//  * fp32 / fp64 inputs: C_H (H x (H+1)) and C_W (W x (W+1)) in acc_t, rows padded
//    against bank conflicts;
//  * bf16 / fp16 inputs: C_H and C_W as SplitMatrix16 (hi and lo, 16-bit; one set when
//    H == W), the layout ldmatrix reads;
// then the quarter-period cosines of both axes (H + 2, W + 2) and `nbuf` tiles of H*W*tc.
template <MmaKind K, typename acc_t>
struct FusedSmem {
  static constexpr bool kSplit16 = is_16bit(K);
  const acc_t *cos_h = nullptr, *cos_w = nullptr;  // !kSplit16
  int ldh = 0, ldw = 0;
  SplitMatrix16 split_h{}, split_w{};  // kSplit16
  acc_t *quarter_h, *quarter_w, *tiles;
  int tile;
  VHEAT_DEVICE FusedSmem(acc_t* base, int H, int W, int tc) : tile(H * W * tc) {
    acc_t* rest;
    if constexpr (kSplit16) {
      uint16_t* p = reinterpret_cast<uint16_t*>(base);
      auto take = [&](int n) {
        const int64_t elems = padded16(n) * split16_ld(n);
        const SplitMatrix16 m{p, p + elems, static_cast<int>(split16_ld(n))};
        p += 2 * elems;
        return m;
      };
      split_h = take(H);
      split_w = W == H ? split_h : take(W);
      rest = reinterpret_cast<acc_t*>(p);  // 2 * elems * 2 bytes: a multiple of 256
    } else {
      ldh = H + 1;
      ldw = W + 1;
      cos_h = base;
      cos_w = base + H * ldh;
      rest = base + H * ldh + W * ldw;
    }
    quarter_h = rest;
    quarter_w = quarter_h + H + 2;
    tiles = quarter_w + W + 2;
  }
  VHEAT_DEVICE acc_t* buf(int i) const { return tiles + i * tile; }
};

// Step 2 of building C_n for the 16-bit kinds (after fill_quarter and a VHEAT_SYNC): the
// hi and lo parts over padded16(n) x padded16(n), zero past n.
template <MmaKind K, typename acc_t>
VHEAT_DEVICE void fill_split_matrix(const acc_t* quarter, const SplitMatrix16& m, int n) {
  const int n16 = static_cast<int>(padded16(n)), pairs = n16 / 2;
  uint16_t* hi = const_cast<uint16_t*>(m.hi);
  uint16_t* lo = const_cast<uint16_t*>(m.lo);
  for (int idx = thread_index(); idx < n16 * pairs; idx += block_size()) {
    const int k = idx / pairs, i = 2 * (idx - k * pairs);
    const float v0 = k < n && i < n ? float(dct_from_quarter(quarter, k, i, n)) : 0.0f;
    const float v1 = k < n && i + 1 < n ? float(dct_from_quarter(quarter, k, i + 1, n)) : 0.0f;
    const float h0 = round_16<K>(v0), h1 = round_16<K>(v1);
    const uint32_t phi = pack_16x2<K>(h0, h1), plo = pack_16x2<K>(v0 - h0, v1 - h1);
    hi[k * m.ld + i] = static_cast<uint16_t>(phi & 0xFFFFu);
    hi[k * m.ld + i + 1] = static_cast<uint16_t>(phi >> 16);
    lo[k * m.ld + i] = static_cast<uint16_t>(plo & 0xFFFFu);
    lo[k * m.ld + i + 1] = static_cast<uint16_t>(plo >> 16);
  }
}

// Builds C_H and C_W in shared memory: quarter tables, VHEAT_SYNC, matrices. The caller
// syncs again before reading them (it overlaps its first tile load with the fill).
template <MmaKind K, typename acc_t>
VHEAT_DEVICE void build_dct_matrices(const FusedSmem<K, acc_t>& sm, int H, int W) {
  fill_quarter(sm.quarter_h, H);
  fill_quarter(sm.quarter_w, W);
  VHEAT_SYNC();
  if constexpr (FusedSmem<K, acc_t>::kSplit16) {
    fill_split_matrix<K>(sm.quarter_h, sm.split_h, H);
    if (W != H) fill_split_matrix<K>(sm.quarter_w, sm.split_w, W);
  } else {
    fill_dct_matrix(sm.quarter_h, const_cast<acc_t*>(sm.cos_h), H, sm.ldh);
    fill_dct_matrix(sm.quarter_w, const_cast<acc_t*>(sm.cos_w), W, sm.ldw);
  }
}

// One 1-D transform of the fused kernels along H or W (the matrix C_n, or C_n^T when
// inverse), on the units K names: ldmatrix + MMA for bf16 / fp16, 3xTF32 MMA for fp32,
// FMA register tiles for fp64.
template <MmaKind K, typename acc_t, typename Epilogue>
VHEAT_DEVICE void fused_transform(const FusedSmem<K, acc_t>& sm, bool along_w, bool inverse, const acc_t* in,
                                  int n_other, int so, int n, int si, int tc, Epilogue epi) {
  if constexpr (FusedSmem<K, acc_t>::kSplit16) {
    transform_axis_mma_ldsm<K>(in, n_other, so, n, si, tc, along_w ? sm.split_w : sm.split_h, inverse, epi);
  } else {
    const acc_t* mat = along_w ? sm.cos_w : sm.cos_h;
    const int ld = along_w ? sm.ldw : sm.ldh;
    transform_on<K, kFusedOtherTile>(in, n_other, so, n, si, tc, mat, inverse ? 1 : ld, inverse ? ld : 1, epi);
  }
}

// DCT2 of the tile `in` (clobbers scratch): epi(idx, v) for every spectrum value v at
// idx = (n * W + m) * tc + c. Syncs between the two transforms.
template <MmaKind K, typename acc_t, typename Epilogue>
VHEAT_DEVICE void fused_dct2(const FusedSmem<K, acc_t>& sm, const acc_t* in, acc_t* scratch, int H, int W, int tc,
                             Epilogue epi) {
  // DCT along W: scratch(h, m, c) = sum_w C_W[m, w] in(h, w, c)
  fused_transform(sm, true, false, in, H, W * tc, W, tc, tc,
                  [&](int h, int m, int c, acc_t v) { scratch[(h * W + m) * tc + c] = v; });
  VHEAT_SYNC();
  // DCT along H: v(n, m, c) = sum_h C_H[n, h] scratch(h, m, c)
  fused_transform(sm, false, false, scratch, W, tc, H, W * tc, tc,
                  [&](int m, int n, int c, acc_t v) { epi((n * W + m) * tc + c, v); });
}

// Inverse DCT2 of the spectrum tile `in` (clobbers scratch): out(h, w, c, v) for every
// output value. Syncs between the two transforms.
template <MmaKind K, typename acc_t, typename Out>
VHEAT_DEVICE void fused_idct2(const FusedSmem<K, acc_t>& sm, const acc_t* in, acc_t* scratch, int H, int W, int tc,
                              Out out) {
  // inverse DCT along H: scratch(h, m, c) = sum_n C_H[n, h] in(n, m, c)
  fused_transform(sm, false, true, in, W, tc, H, W * tc, tc,
                  [&](int m, int h, int c, acc_t v) { scratch[(h * W + m) * tc + c] = v; });
  VHEAT_SYNC();
  // inverse DCT along W: out(h, w, c) = sum_m C_W[m, w] scratch(h, m, c)
  fused_transform(sm, true, true, scratch, H, W * tc, W, tc, tc, out);
}

// E[n, m, c0 + c] for the spectrum index idx = (n * W + m) * tc + c (0 past C).
template <typename acc_t>
VHEAT_DEVICE acc_t attenuation(const acc_t* E, int idx, int C, int c0, int tc) {
  const int nm = idx / tc, gc = c0 + idx - nm * tc;
  return gc < C ? E[int64_t(nm) * C + gc] : acc_t(0);
}

// y = HCO(x, E), the whole op in one launch. Grid: B * ctiles blocks, block = (b, channel
// tile). x: strides xs (channel stride 1); E (H, W, C) and y contiguous.
template <typename scalar_t, typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads)
    hco_fused_forward_kernel(const scalar_t* __restrict__ x, PlaneStrides xs, const acc_t* __restrict__ E,
                             scalar_t* __restrict__ y, int H, int W, int C, int tc, int ctiles) {
  VHEAT_DYNAMIC_SMEM(acc_t, smem);
  const FusedSmem<MmaKindOf<scalar_t>::value, acc_t> sm(smem, H, W, tc);
  acc_t* buf_a = sm.buf(0);
  acc_t* buf_b = sm.buf(1);
  const int c0 = static_cast<int>(block_index() % ctiles) * tc;
  const int64_t b = block_index() / ctiles;

  build_dct_matrices(sm, H, W);
  load_plane_tile(x + b * xs.b, H, W, xs.h, xs.w, C, c0, tc, buf_a);
  VHEAT_SYNC();
  // attenuated spectrum: buf_a(n, m, c) = E[n, m, c] * DCT2(x)(n, m, c)
  fused_dct2(sm, buf_a, buf_b, H, W, tc,
                       [&](int idx, acc_t v) { buf_a[idx] = v * attenuation(E, idx, C, c0, tc); });
  VHEAT_SYNC();
  // inverse DCT2, the last transform straight to global memory
  scalar_t* y_plane = y + b * int64_t(H) * W * C;
  fused_idct2(sm, buf_a, buf_b, H, W, tc, [&](int h, int w, int c, acc_t v) {
    if (c0 + c < C) y_plane[int64_t(h * W + w) * C + c0 + c] = static_cast<scalar_t>(v);
  });
}

// The backward in one launch. Block = (batch chunk, channel tile); for each batch element
// b of its chunk, in increasing order:
//   G = DCT2(dy_b);  dx_b = IDCT2(G * E)   (when dx != nullptr; the operator is self-adjoint in x)
//   acc += G * DCT2(x_b)                   (when partial != nullptr)
// then partial[chunk] = acc ((H, W, C) contiguous). With one chunk, partial is dE itself;
// otherwise sum_chunks_kernel adds the chunks in increasing order. x and dy: strides xs
// and gs (channel stride 1); E and dx contiguous. Grid: nchunks * ctiles blocks.
// Shared memory: 4 tiles (P: G; Q, R: work; A: the dE accumulator).
template <typename scalar_t, typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads)
    hco_fused_backward_kernel(const scalar_t* __restrict__ x, PlaneStrides xs, const scalar_t* __restrict__ gy,
                              PlaneStrides gs, const acc_t* __restrict__ E, scalar_t* __restrict__ dx,
                              acc_t* __restrict__ partial, int64_t B, int H, int W, int C, int tc, int ctiles,
                              int64_t bchunk) {
  VHEAT_DYNAMIC_SMEM(acc_t, smem);
  const FusedSmem<MmaKindOf<scalar_t>::value, acc_t> sm(smem, H, W, tc);
  acc_t* buf_p = sm.buf(0);
  acc_t* buf_q = sm.buf(1);
  acc_t* buf_r = sm.buf(2);
  acc_t* acc = sm.buf(3);
  const int c0 = static_cast<int>(block_index() % ctiles) * tc;
  const int64_t chunk = block_index() / ctiles;
  const int64_t b_begin = chunk * bchunk;
  const int64_t b_end = b_begin + bchunk < B ? b_begin + bchunk : B;
  const int64_t plane_size = int64_t(H) * W * C;

  build_dct_matrices(sm, H, W);
  if (partial != nullptr)
    for (int idx = thread_index(); idx < sm.tile; idx += block_size()) acc[idx] = acc_t(0);
  for (int64_t b = b_begin; b < b_end; ++b) {
    load_plane_tile(gy + b * gs.b, H, W, gs.h, gs.w, C, c0, tc, buf_p);
    VHEAT_SYNC();
    // buf_p = G = DCT2(dy_b); buf_r = G * E
    fused_dct2(sm, buf_p, buf_q, H, W, tc, [&](int idx, acc_t v) {
      buf_p[idx] = v;
      if (dx != nullptr) buf_r[idx] = v * attenuation(E, idx, C, c0, tc);
    });
    VHEAT_SYNC();
    if (dx != nullptr) {
      scalar_t* dx_plane = dx + b * plane_size;
      fused_idct2(sm, buf_r, buf_q, H, W, tc, [&](int h, int w, int c, acc_t v) {
        if (c0 + c < C) dx_plane[int64_t(h * W + w) * C + c0 + c] = static_cast<scalar_t>(v);
      });
      // No sync needed here: the last inverse transform reads only buf_q, and x_b goes to
      // buf_r (read for the last time before the previous sync), so the threads that finish
      // first start loading x_b while the others still transform.
    }
    if (partial != nullptr) {
      load_plane_tile(x + b * xs.b, H, W, xs.h, xs.w, C, c0, tc, buf_r);
      VHEAT_SYNC();
      // acc += G * DCT2(x_b); DCT along W overwrites buf_q: all threads passed the sync
      // above, so the inverse transform's reads of buf_q are done.
      fused_dct2(sm, buf_r, buf_q, H, W, tc, [&](int idx, acc_t v) { acc[idx] += buf_p[idx] * v; });
    }
    VHEAT_SYNC();
  }
  if (partial == nullptr) return;
  acc_t* out = partial + chunk * plane_size;
  for (int idx = thread_index(); idx < sm.tile; idx += block_size()) {
    const int p = idx / tc, c = idx - p * tc;
    if (c0 + c < C) out[int64_t(p) * C + c0 + c] = acc[idx];
  }
}

// out[i] = sum_k partial[k, i] over k < nchunks in increasing order (deterministic).
template <typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads)
    sum_chunks_kernel(const acc_t* __restrict__ partial, acc_t* __restrict__ out, int64_t n, int64_t nchunks) {
  for (int64_t i = block_index() * block_size() + thread_index(); i < n; i += grid_size() * block_size()) {
    acc_t s = acc_t(0);
    for (int64_t k = 0; k < nchunks; ++k) s += partial[k * n + i];
    out[i] = s;
  }
}

// ---- line kernels (planes that do not fit in shared memory) ------------------------

// table[k * n + i] = C_n[k, i] and table[n * n + i * n + k] = C_n[k, i] (its transpose,
// so the line kernels read both the DCT and its inverse contiguously across threads).
template <typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads) fill_dct_tables_kernel(acc_t* __restrict__ table, int n) {
  const int64_t nn = int64_t(n) * n;
  for (int64_t idx = block_index() * block_size() + thread_index(); idx < nn; idx += grid_size() * block_size()) {
    const int k = static_cast<int>(idx / n), i = static_cast<int>(idx % n);
    const acc_t v = static_cast<acc_t>(dct_coef<double>(k, i, n));
    table[idx] = v;
    table[nn + int64_t(i) * n + k] = v;
  }
}

enum LineOp : int {
  kLineDct = 0,          // out = C_n in
  kLineIdct = 1,         // out = C_n^T in
  kLineDctScaleIdct = 2  // out = C_n^T (E * (C_n in))
};

// Geometry of the lines of a (B, H, W, C) tensor along one axis: line l has
// outer = l / inner_count and inner = l % inner_count; in the output it starts at
// outer * outer_stride + inner * inner_stride and its elements are elem_stride apart, in
// the input at outer * in.outer + inner * in.inner, in.elem apart (the first pass reads a
// strided x in place; the workspace passes have in == out). E (for kLineDctScaleIdct) of
// element j of line (outer, inner) is at j * elem_stride_e + inner * inner_stride_e (+ channel).
struct LineStrides {
  int64_t outer, inner, elem;
};
struct LineGeometry {
  int n;
  int64_t inner_count, outer_stride, inner_stride, elem_stride;
  int64_t elem_stride_e, inner_stride_e;
  LineStrides in;
};

// One block per (line, channel tile). `in` and `out` may alias (then with equal
// strides): a block reads its whole line tile into shared memory before writing the
// same elements. K: the units of the transforms (MmaKindOf of the op's input type: tensor cores except for fp64), the
// cosine matrix read from the global tables (L2-resident).
template <MmaKind K, typename in_t, typename out_t, typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads)
    hco_line_kernel(const in_t* in, out_t* out, const acc_t* __restrict__ E, const acc_t* __restrict__ table,
                    LineGeometry g, int C, int tc, int ctiles, int op) {
  VHEAT_DYNAMIC_SMEM(acc_t, smem);
  const int n = g.n;
  acc_t* buf0 = smem;
  acc_t* buf1 = smem + n * tc;
  const acc_t* dct = table + int64_t(n) * n;  // transposed: M(j, i) = C[j, i] at i * n + j
  const acc_t* idct = table;                  // M(j, i) = C[i, j] at i * n + j
  const int c0 = static_cast<int>(block_index() % ctiles) * tc;
  const int64_t line = block_index() / ctiles;
  const int64_t outer = line / g.inner_count, inner = line % g.inner_count;
  const int64_t base = outer * g.outer_stride + inner * g.inner_stride + c0;
  const int64_t in_base = outer * g.in.outer + inner * g.in.inner + c0;

  for (int idx = thread_index(); idx < n * tc; idx += block_size()) {
    const int i = idx / tc, c = idx - i * tc;
    buf0[idx] = c0 + c < C ? static_cast<acc_t>(in[in_base + i * g.in.elem + c]) : acc_t(0);
  }
  VHEAT_SYNC();
  auto store = [&](int, int j, int c, acc_t v) {
    if (c0 + c < C) out[base + j * g.elem_stride + c] = static_cast<out_t>(v);
  };
  if (op == kLineDctScaleIdct) {
    transform_on<K, 1>(buf0, 1, 0, n, tc, tc, dct, 1, n, [&](int, int j, int c, acc_t v) {
      const int gc = c0 + c;
      const acc_t e = gc < C ? E[j * g.elem_stride_e + inner * g.inner_stride_e + gc] : acc_t(0);
      buf1[j * tc + c] = v * e;
    });
    VHEAT_SYNC();
    transform_on<K, 1>(buf1, 1, 0, n, tc, tc, idct, 1, n, store);
  } else {
    transform_on<K, 1>(buf0, 1, 0, n, tc, tc, op == kLineDct ? dct : idct, 1, n, store);
  }
}

// out[i] = sum_b a[b, i] * b[b, i] over b < B in increasing order (deterministic dE).
template <typename acc_t>
VHEAT_GLOBAL void VHEAT_LAUNCH_BOUNDS(kMaxThreads)
    batch_dot_kernel(const acc_t* __restrict__ a, const acc_t* __restrict__ b, acc_t* __restrict__ out,
                     int64_t n, int64_t B) {
  for (int64_t i = block_index() * block_size() + thread_index(); i < n; i += grid_size() * block_size()) {
    acc_t s = acc_t(0);
    for (int64_t k = 0; k < B; ++k) s += a[k * n + i] * b[k * n + i];
    out[i] = s;
  }
}

}  // namespace vheat::cuda
