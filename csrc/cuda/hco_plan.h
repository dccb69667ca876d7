// Launch planning for the CUDA HCO kernels (plain C++: shared by the CUDA op and the
// host emulation test). Picks, per call, the strategy, channels per block and shared
// memory from the shape, the accumulator size and the device's shared-memory limit.
//
// Strategy: the fused plane kernels when C_H, C_W and their nbuf tiles of H*W*tc
// accumulators fit in shared memory (about H, W <= 110 in fp32 forward; every vHeat
// classification plane, 56/28/14/7): forward 1 launch, backward 1 launch (dx and the
// per-chunk dE partials) + 1 fixed-order reduce when the batch is split into chunks.
// Otherwise line passes over a global workspace (any H, W up to kMaxAxis).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vheat::cuda {

// Shared memory a block asks for before we accept fewer channels per block: two such
// blocks fit in an SM on both sm_80 (164 KiB) and sm_90 (228 KiB).
constexpr size_t kSoftSmemBudget = 80 * 1024;
// Longest supported axis: a line tile of 2 x kMaxAxis fp64 values must fit in 227 KiB,
// and the cosine phase (2i + 1) k < 2 kMaxAxis^2 must fit in int32.
constexpr int64_t kMaxAxis = 8192;
constexpr int kTileCandidates[] = {32, 16, 8, 4, 2, 1};
constexpr int kMicroTileHost = 4;  // == kMicroTile in hco_kernels.cuh
constexpr int kFusedOtherTileHost = 2;  // == kFusedOtherTile in hco_kernels.cuh
constexpr int kThreadsMax = 256;   // == kMaxThreads in hco_kernels.cuh
constexpr int kForwardBuffers = 2;
constexpr int kBackwardBuffers = 4;  // dy spectrum, two work tiles, dE accumulator

struct HcoShape {
  int64_t B, H, W, C;
  int64_t plane() const { return H * W * C; }
  int64_t numel() const { return B * H * W * C; }
};

// Element strides of a (B, H, W, C) input whose channel stride is 1 (the op reads x and
// dy in place with these; outputs are always contiguous).
struct PlaneStrides {
  int64_t b, h, w;
};
inline PlaneStrides contiguous_strides(const HcoShape& s) { return {s.H * s.W * s.C, s.W * s.C, s.C}; }

enum class HcoPath { kFused, kLines };

// One kernel launch: blocks of `threads`, `tc` channels per block, dynamic smem.
struct TileLaunch {
  int tc = 0, ctiles = 0, threads = 0;
  int64_t blocks = 0;
  size_t smem = 0;
};

// split16: the input is bf16 / fp16 (its fused kernels keep 16-bit split matrices, so
// their shared memory differs); run_forward / run_backward check it against the type.
struct ForwardPlan {
  HcoPath path = HcoPath::kFused;
  bool split16 = false;
  TileLaunch fused;              // kFused: builds its cosine matrices in shared memory
  TileLaunch line_w, line_h;     // kLines
  int64_t workspace_elems = 0;   // acc_t elements; kLines: cosine tables + one (B, H, W, C) buffer
};

// Backward of y = HCO(x, E) for dy: dx = HCO(dy, E) (self-adjoint in x) and
// dE = sum_b DCT2(x_b) * DCT2(dy_b).
struct BackwardPlan {
  HcoPath path = HcoPath::kFused;
  bool split16 = false;
  bool need_dx = true, need_dE = true;
  // dx alone (any path), and dx on the line path: the forward plan run on dy.
  ForwardPlan forward;
  // kFused with dE: one block per (batch chunk, channel tile) writes dx of its batch
  // elements and its chunk's dE partial; reduce adds the nchunks partials in order
  // (skipped when nchunks == 1: the block writes dE itself).
  TileLaunch fused;
  int64_t nchunks = 0, bchunk = 0;
  TileLaunch reduce;  // sum_chunks (kFused, nchunks > 1) or batch_dot (kLines)
  TileLaunch line_w, line_h;  // kLines dE: DCT2 of x and dy
  int64_t workspace_elems = 0;  // acc_t elements: kFused partials; kLines tables + 2 (B, H, W, C)
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int threads_for(int64_t items) {
  const int64_t rounded = ceil_div(std::max<int64_t>(items, 1), 32) * 32;
  return static_cast<int>(std::clamp<int64_t>(rounded, 64, kThreadsMax));
}

inline int64_t pow2_at_least(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// The bf16 / fp16 fused kernels keep C_n as hi + lo 16-bit matrices of padded16(n) rows
// of split16_ld(n) values (SplitMatrix16 in hco_kernels.cuh: ldmatrix rows 16-byte
// aligned and spread over the banks), one set shared by both axes when H == W.
constexpr int64_t padded16(int64_t n) { return (n + 15) / 16 * 16; }
constexpr int64_t split16_ld(int64_t n) { return padded16(n) + 8; }
inline size_t split16_matrix_bytes(int64_t n) { return size_t(2 * padded16(n) * split16_ld(n)) * 2; }

// Cosine matrices (split16: see above; else C_H and C_W in acc_t, rows padded to N + 1),
// the quarter-period cosines they are built from (N + 2 values per axis, see
// build_dct_matrices), then nbuf tiles of H * W * tc (FusedSmem in hco_kernels.cuh).
inline size_t fused_smem_bytes(int64_t H, int64_t W, int tc, int nbuf, size_t acc_bytes, bool split16) {
  const size_t matrices = split16 ? split16_matrix_bytes(H) + (W == H ? 0 : split16_matrix_bytes(W))
                                  : size_t(H * (H + 1) + W * (W + 1)) * acc_bytes;
  return matrices + size_t((H + 2) + (W + 2) + nbuf * H * W * tc) * acc_bytes;
}

inline size_t line_smem_bytes(int64_t n, int tc, size_t acc_bytes) { return size_t(2 * n * tc) * acc_bytes; }

// Largest tc (not far above C) whose smem fits the soft budget, else the smallest one
// that fits the hard limit; tc = 0 when nothing fits.
template <typename SmemFn>
int pick_tc(int64_t C, size_t smem_limit, SmemFn smem_for) {
  const int64_t cap = pow2_at_least(C);
  int fallback = 0;
  for (int tc : kTileCandidates) {
    if (tc > cap) continue;
    const size_t bytes = smem_for(tc);
    if (bytes <= std::min(smem_limit, kSoftSmemBudget)) return tc;
    if (bytes <= smem_limit) fallback = tc;
  }
  return fallback;
}

inline TileLaunch fused_launch(const HcoShape& s, int nbuf, size_t acc_bytes, bool split16, size_t smem_limit,
                               int64_t planes) {
  TileLaunch t;
  t.tc = pick_tc(s.C, smem_limit, [&](int tc) { return fused_smem_bytes(s.H, s.W, tc, nbuf, acc_bytes, split16); });
  if (t.tc == 0) return t;
  t.ctiles = static_cast<int>(ceil_div(s.C, t.tc));
  const int64_t side = std::max(s.H, s.W);  // work items of the larger transform phase
  t.threads = threads_for(ceil_div(side, kFusedOtherTileHost) * ceil_div(side, kMicroTileHost) * t.tc);
  t.blocks = planes * t.ctiles;
  t.smem = fused_smem_bytes(s.H, s.W, t.tc, nbuf, acc_bytes, split16);
  return t;
}

inline TileLaunch line_launch(int64_t n, int64_t lines, int64_t C, size_t acc_bytes, size_t smem_limit) {
  TileLaunch t;
  t.tc = pick_tc(C, smem_limit, [&](int tc) { return line_smem_bytes(n, tc, acc_bytes); });
  if (t.tc == 0) return t;
  t.ctiles = static_cast<int>(ceil_div(C, t.tc));
  t.threads = threads_for(ceil_div(n, kMicroTileHost) * t.tc);
  t.blocks = lines * t.ctiles;
  t.smem = line_smem_bytes(n, t.tc, acc_bytes);
  return t;
}

inline TileLaunch elementwise_launch(int64_t n) {
  TileLaunch t;
  t.threads = kThreadsMax;
  t.blocks = std::clamp<int64_t>(ceil_div(n, kThreadsMax), 1, 4096);
  return t;
}

inline int64_t dct_tables_elems(const HcoShape& s) { return 2 * (s.H * s.H + s.W * s.W); }

// Empty string when the shape is supported, else why not.
inline std::string unsupported_reason(const HcoShape& s) {
  if (s.H > kMaxAxis || s.W > kMaxAxis)
    return "H and W must be <= " + std::to_string(kMaxAxis) + " for the CUDA kernels, got H=" +
           std::to_string(s.H) + ", W=" + std::to_string(s.W) + " (use backend='fft')";
  return "";
}

// force_lines: take the line path even when the fused kernel fits (tests cover both).
inline ForwardPlan plan_forward(const HcoShape& s, size_t acc_bytes, bool split16, size_t smem_limit,
                                bool force_lines = false) {
  ForwardPlan p;
  p.split16 = split16;
  if (!force_lines) {
    p.fused = fused_launch(s, kForwardBuffers, acc_bytes, split16, smem_limit, s.B);
    if (p.fused.tc > 0) return p;
  }
  p.path = HcoPath::kLines;
  p.line_w = line_launch(s.W, s.B * s.H, s.C, acc_bytes, smem_limit);
  p.line_h = line_launch(s.H, s.B * s.W, s.C, acc_bytes, smem_limit);
  p.workspace_elems = dct_tables_elems(s) + s.numel();
  return p;
}

// target_blocks: how many blocks the batch chunking aims for (tests lower it).
inline BackwardPlan plan_backward(const HcoShape& s, size_t acc_bytes, bool split16, size_t smem_limit, bool need_dx,
                                  bool need_dE, bool force_lines = false, int64_t target_blocks = 1024) {
  BackwardPlan p;
  p.split16 = split16;
  p.need_dx = need_dx;
  p.need_dE = need_dE;
  p.forward = plan_forward(s, acc_bytes, split16, smem_limit, force_lines);
  p.path = p.forward.path;
  if (!need_dE) {
    p.workspace_elems = p.forward.workspace_elems;
    return p;
  }
  if (!force_lines) {
    p.fused = fused_launch(s, kBackwardBuffers, acc_bytes, split16, smem_limit, 1);
    if (p.fused.tc > 0) {
      p.path = HcoPath::kFused;
      // Batch chunks from the shape alone (never from the device), so the summation
      // order, and with it every bit of dE, is the same on every GPU and every run.
      // B = 0: no chunk; the reduce writes dE = 0.
      const int64_t want = std::clamp<int64_t>(ceil_div(target_blocks, p.fused.ctiles), 1, std::max<int64_t>(s.B, 1));
      p.bchunk = std::max<int64_t>(ceil_div(s.B, want), 1);
      p.nchunks = ceil_div(s.B, p.bchunk);
      p.fused.blocks = p.nchunks * p.fused.ctiles;
      if (p.nchunks != 1) {
        p.reduce = elementwise_launch(s.plane());
        p.workspace_elems = p.nchunks * s.plane();
      }
      return p;
    }
  }
  p.path = HcoPath::kLines;
  p.line_w = line_launch(s.W, s.B * s.H, s.C, acc_bytes, smem_limit);
  p.line_h = line_launch(s.H, s.B * s.W, s.C, acc_bytes, smem_limit);
  p.reduce = elementwise_launch(s.plane());
  // dx (the forward line passes on dy) and then dE reuse one workspace, in stream order.
  p.workspace_elems = dct_tables_elems(s) + 2 * s.numel();
  return p;
}

}  // namespace vheat::cuda
