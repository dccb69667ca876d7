// Declarations of the per-plane DCT kernels, compiled once per instruction set
// (plane_kernels_{generic,avx2,avx512}.cpp) and chosen at run time by hco_cpu.cpp.
//
// A "plane" is one (batch, channel-block) slice held as (H, padded_width(W), L) values,
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
  // For even N >= kRecurseMin the even outputs are DCT-II_{N/2}(a) with a pre-scaled by
  // 1/sqrt(2): `half` (null: dense `even`). The odd outputs are a DCT-IV of length
  // M = N/2 of d; for even M it splits into two DCT-II of length M/2 (`quarter`) between a
  // rotation of (d_n, d_{M-1-n}) by g_n = pi (2n+1) / (2N) and a butterfly (derivation at
  // dct4_split), so the transform is O(N log N) down to an odd or small length with no
  // recurrences that would grow the rounding error. Null `quarter`: dense `odd`.
  const AxisTables* half = nullptr;
  const AxisTables* quarter = nullptr;
  const T* rot_cos = nullptr;  // (M/2): cos g_n, with `quarter`
  const T* rot_sin = nullptr;  // (M/2): sin g_n
  const T* dense = nullptr;    // (N x N) C[k][i], for the run sweeps' small_dct (N <= kDenseSideMax)
};

// Run-sweep planes (vHeat's four classification stages at 224: 56, 28, 14, 7 square): the
// whole HCO of a run of adjacent channel blocks of one image in three sweeps, each line
// transformed in registers: sides up to kDenseSideMax by small_dct's dense even/odd products,
// longer ones by the butterfly tree (plane_kernels_impl.h reg_dct), which at 28 and 56 beats
// the per-plane path below on AVX2 and AVX-512 alike (figures in CHANGELOG, #27). Rows are
// transformed straight from the channels-last input, image row by image row with the blocks
// innermost, so every load of the sweep walks memory 64 bytes at a time (the hardware
// prefetchers follow it; a plane at a time is a walk of H x W lines C apart that they do not).
// The run's planes stay in `work` (sized to stay in L2) for the column transforms, attenuation
// and inverse, and the inverse rows stream out the same way. No line scratch, no second pass
// over the columns.
constexpr int kDenseSideMax = 16;
inline bool small_plane_supported(int H, int W) { return H == W && (H == 7 || H == 14 || H == 28 || H == 56); }

// One run for small_run_hco. Every tensor is channels-last with channel stride 1 and points
// at channel 0 of the run's first block of one image: point (h, w) of block g at
// base + h * row + w * point + g * L. The inputs src and saved have their own row and point
// strides (a view such as a chunk of a wider tensor is read in place); the outputs dst and
// spectrum share out_row / out_point; E and acc are contiguous, row W * Ce and point Ce (E's
// channels, padded to whole blocks). Optional parts are null.
template <typename T>
struct SmallRunArgs {
  int blocks;        // full channel blocks in the run
  int64_t src_row, src_point;
  int64_t saved_row, saved_point;
  int64_t out_row, out_point;
  int64_t Ce;
  const AxisTables<T>* th;  // the axes' tables
  const AxisTables<T>* tw;
  const T* src;      // x (or grad_y)
  const T* e;        // E
  T* dst;            // IDCT2(DCT2(src) * E), or null
  T* spectrum;       // DCT2(src) written here, or null
  const T* saved;    // with acc: acc += DCT2(saved) * DCT2(src), or saved * DCT2(src) with saved_is_spectrum
  bool saved_is_spectrum;
  T* acc;
  T* work;           // small_run_work_elems(): the run's planes (and DCT2(saved)'s)
};

// The run's planes, and with a spatial `saved` (x; acc without saved_is_spectrum) DCT2(saved)'s too.
inline int64_t small_run_work_elems(int64_t blocks, int H, int W, int lanes, bool spatial_saved) {
  return (spatial_saved ? 2 : 1) * blocks * H * W * lanes;
}

constexpr int kRecurseMin = 8;

// Row stride of a plane in lane groups. Odd, so that walking a column (one 64-byte lane
// group per row) visits distinct cache sets; with W a multiple of 8 (56, 128, 256) an
// unpadded column maps onto a few sets and thrashes L1 and L2.
inline int padded_width(int W) { return W | 1; }

// Most lines one call transforms at once (VHEAT_GROUP of the widest build).
constexpr int kMaxGroup = 4;

// Line scratch each plane transform needs, in elements of T (per thread): the transforms
// run in place, kMaxGroup lines at a time, and the recursion uses N + N/2 + ... < 2N
// points of those lines.
inline int64_t plane_scratch_elems(int H, int W, int lanes) {
  const int n = H > W ? H : W;
  return 4 * int64_t(n) * lanes * kMaxGroup;
}

#define VHEAT_DECLARE_PLANE_KERNELS(ISA)                                                    \
  namespace ISA {                                                                           \
  template <typename T>                                                                     \
  void dct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, const T* src, int64_t src_row, \
                  int64_t src_point, T* plane, T* scratch);                                 \
  template <typename T>                                                                     \
  void idct2_plane(const AxisTables<T>& th, const AxisTables<T>& tw, T* plane, T* dst,       \
                   int64_t dst_row, int64_t dst_point, T* scratch);                         \
  template <typename T>                                                                     \
  void small_run_hco(int H, int W, const SmallRunArgs<T>& a);                           \
  }

VHEAT_DECLARE_PLANE_KERNELS(generic)
VHEAT_DECLARE_PLANE_KERNELS(avx2)
VHEAT_DECLARE_PLANE_KERNELS(avx512)

}  // namespace vheat::cpu
