// Kernel sequences of the CUDA HCO ops for a given plan. Templated on the launcher so
// the CUDA op (hco_cuda_kernels.cu: <<<>>> + launch checks) and the host emulation test
// run the very same sequence. Inputs x and dy are channels-last with channel stride 1 and
// the given PlaneStrides; E, outputs and the workspace are contiguous device buffers.
// `workspace` holds plan.workspace_elems acc_t elements: on the line path the cosine
// tables of both axes first (dct_tables_elems), then the path's buffers.
//
// Launches per call on the fused path (every vHeat classification plane): forward 1;
// backward 1 (one batch chunk) or 2 (the chunks' dE partials, then their reduction).
#pragma once

#include <stdexcept>

#include "hco_kernels.cuh"
#include "hco_plan.h"

namespace vheat::cuda {

// A plan made for another input type would size the fused kernels' shared memory wrongly.
template <typename scalar_t>
void check_plan_type(bool split16) {
  if (split16 != is_16bit(MmaKindOf<scalar_t>::value))
    throw std::invalid_argument("vheat CUDA: launch plan made with split16 = " + std::to_string(split16) +
                                " for an input type whose fused kernels use the other shared-memory layout");
}

// Line geometry of a (B, H, W, C) tensor along W (lines = (b, h)) and along H (lines =
// (b, w)); the output contiguous, the input read with strides `in`.
inline LineGeometry lines_along_w(const HcoShape& s, const PlaneStrides& in) {
  return {static_cast<int>(s.W), s.H, s.H * s.W * s.C, s.W * s.C, s.C, s.C, s.W * s.C, {in.b, in.h, in.w}};
}
inline LineGeometry lines_along_h(const HcoShape& s, const PlaneStrides& in) {
  return {static_cast<int>(s.H), s.W, s.H * s.W * s.C, s.C, s.W * s.C, s.W * s.C, s.C, {in.b, in.w, in.h}};
}
inline LineGeometry lines_along_w(const HcoShape& s) { return lines_along_w(s, contiguous_strides(s)); }
inline LineGeometry lines_along_h(const HcoShape& s) { return lines_along_h(s, contiguous_strides(s)); }

template <typename acc_t, typename Launch>
void fill_dct_tables(const Launch& launch, const HcoShape& s, acc_t* tables_h, acc_t* tables_w) {
  const TileLaunch th = elementwise_launch(s.H * s.H), tw = elementwise_launch(s.W * s.W);
  launch(fill_dct_tables_kernel<acc_t>, th.blocks, th.threads, 0, tables_h, static_cast<int>(s.H));
  launch(fill_dct_tables_kernel<acc_t>, tw.blocks, tw.threads, 0, tables_w, static_cast<int>(s.W));
}

// DCT2 of a (B, H, W, C) tensor (strides `st`) into the contiguous acc_t buffer `out` (line path).
template <typename scalar_t, typename acc_t, typename Launch>
void dct2_lines(const Launch& launch, const HcoShape& s, const TileLaunch& lw, const TileLaunch& lh,
                const scalar_t* in, const PlaneStrides& st, acc_t* out, const acc_t* tables_h, const acc_t* tables_w) {
  const int C = static_cast<int>(s.C);
  launch(hco_line_kernel<MmaKindOf<scalar_t>::value, scalar_t, acc_t, acc_t>, lw.blocks, lw.threads, lw.smem, in, out,
         static_cast<const acc_t*>(nullptr), tables_w, lines_along_w(s, st), C, lw.tc, lw.ctiles, int(kLineDct));
  launch(hco_line_kernel<MmaKindOf<scalar_t>::value, acc_t, acc_t, acc_t>, lh.blocks, lh.threads, lh.smem,
         static_cast<const acc_t*>(out), out, static_cast<const acc_t*>(nullptr), tables_h, lines_along_h(s), C, lh.tc,
         lh.ctiles, int(kLineDct));
}

// y = HCO(x, E); E is (H, W, C) in acc_t, y contiguous.
template <typename scalar_t, typename acc_t, typename Launch>
void run_forward(const Launch& launch, const HcoShape& s, const ForwardPlan& plan, const scalar_t* x,
                 const PlaneStrides& xs, const acc_t* E, scalar_t* y, acc_t* workspace) {
  check_plan_type<scalar_t>(plan.split16);
  const int H = static_cast<int>(s.H), W = static_cast<int>(s.W), C = static_cast<int>(s.C);
  if (plan.path == HcoPath::kFused) {
    const TileLaunch& f = plan.fused;
    launch(hco_fused_forward_kernel<scalar_t, acc_t>, f.blocks, f.threads, f.smem, x, xs, E, y, H, W, C, f.tc,
           f.ctiles);
    return;
  }
  acc_t* tables_h = workspace;
  acc_t* tables_w = tables_h + 2 * s.H * s.H;
  fill_dct_tables(launch, s, tables_h, tables_w);
  const acc_t* ctables_h = tables_h;
  const acc_t* ctables_w = tables_w;
  acc_t* buf = tables_w + 2 * s.W * s.W;
  const TileLaunch &lw = plan.line_w, &lh = plan.line_h;
  const acc_t* no_E = nullptr;
  launch(hco_line_kernel<MmaKindOf<scalar_t>::value, scalar_t, acc_t, acc_t>, lw.blocks, lw.threads, lw.smem, x, buf,
         no_E, ctables_w, lines_along_w(s, xs), C, lw.tc, lw.ctiles, int(kLineDct));
  launch(hco_line_kernel<MmaKindOf<scalar_t>::value, acc_t, acc_t, acc_t>, lh.blocks, lh.threads, lh.smem,
         static_cast<const acc_t*>(buf), buf, E, ctables_h, lines_along_h(s), C, lh.tc, lh.ctiles,
         int(kLineDctScaleIdct));
  launch(hco_line_kernel<MmaKindOf<scalar_t>::value, acc_t, scalar_t, acc_t>, lw.blocks, lw.threads, lw.smem,
         static_cast<const acc_t*>(buf), y, no_E, ctables_w, lines_along_w(s), C, lw.tc, lw.ctiles, int(kLineIdct));
}

// Backward for dy = gy: dx = HCO(gy, E) into dx (contiguous, when plan.need_dx) and
// dE = sum_b DCT2(x_b) * DCT2(gy_b) in acc_t into dE_acc (H, W, C) (when plan.need_dE),
// summed over the batch in an order fixed by the shape.
template <typename scalar_t, typename acc_t, typename Launch>
void run_backward(const Launch& launch, const HcoShape& s, const BackwardPlan& plan, const scalar_t* x,
                  const PlaneStrides& xs, const scalar_t* gy, const PlaneStrides& gs, const acc_t* E, scalar_t* dx,
                  acc_t* dE_acc, acc_t* workspace) {
  check_plan_type<scalar_t>(plan.split16);
  const int H = static_cast<int>(s.H), W = static_cast<int>(s.W), C = static_cast<int>(s.C);
  if (!plan.need_dE) {
    if (plan.need_dx) run_forward(launch, s, plan.forward, gy, gs, E, dx, workspace);
    return;
  }
  const TileLaunch& r = plan.reduce;
  if (plan.path == HcoPath::kFused) {
    const TileLaunch& f = plan.fused;
    acc_t* partial = plan.nchunks == 1 ? dE_acc : workspace;
    launch(hco_fused_backward_kernel<scalar_t, acc_t>, f.blocks, f.threads, f.smem, x, xs, gy, gs, E,
           plan.need_dx ? dx : static_cast<scalar_t*>(nullptr), partial, s.B, H, W, C, f.tc, f.ctiles, plan.bchunk);
    if (plan.nchunks != 1)  // B = 0 (no chunk) included: the reduce writes dE = 0
      launch(sum_chunks_kernel<acc_t>, r.blocks, r.threads, 0, static_cast<const acc_t*>(partial), dE_acc, s.plane(),
             plan.nchunks);
    return;
  }
  if (plan.need_dx) run_forward(launch, s, plan.forward, gy, gs, E, dx, workspace);
  acc_t* tables_h = workspace;
  acc_t* tables_w = tables_h + 2 * s.H * s.H;
  fill_dct_tables(launch, s, tables_h, tables_w);
  acc_t* x_spectrum = tables_w + 2 * s.W * s.W;
  acc_t* gy_spectrum = x_spectrum + s.numel();
  dct2_lines(launch, s, plan.line_w, plan.line_h, x, xs, x_spectrum, tables_h, tables_w);
  dct2_lines(launch, s, plan.line_w, plan.line_h, gy, gs, gy_spectrum, tables_h, tables_w);
  launch(batch_dot_kernel<acc_t>, r.blocks, r.threads, 0, static_cast<const acc_t*>(x_spectrum),
         static_cast<const acc_t*>(gy_spectrum), dE_acc, s.plane(), s.B);
}

}  // namespace vheat::cuda
