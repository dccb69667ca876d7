// CUDA implementation of vheat::hco_forward / vheat::hco_backward (schema: csrc/ops.cpp).
// Same contract as the CPU kernel (csrc/cpu/hco_cpu.cpp): x (B, H, W, C) channels-last in
// float32 / float64 / bfloat16 / float16 (read in place when its channel stride is 1, for
// example the chunk view of a linear output; copied once otherwise), E (H, W, C) in any
// float dtype (used in fp32, fp64 for double x), y in x's dtype, dE in E's dtype and
// reduced over the batch in a fixed order. Kernels: hco_kernels.cuh (launched from
// hco_cuda_kernels.cu); launch plans: hco_plan.h; design: docs/cuda.md.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>

#include "hco_cuda_launch.h"

namespace vheat::cuda {
namespace {

// Tests set VHEAT_CUDA_FORCE_LINES=1 to run the large-plane path on small shapes.
bool force_lines() {
  const char* v = std::getenv("VHEAT_CUDA_FORCE_LINES");
  return v != nullptr && v[0] == '1';
}

size_t smem_limit() { return at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin; }

void check_float(const at::Tensor& t, const char* op, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf, op, ": ", name,
              " has unsupported dtype ", st, "; accepted: float32, float64, bfloat16, float16");
}

// Shape and dtype first, device last: the messages about the call itself come first, and
// tests can reach them on machines without a GPU by redispatching CPU tensors here.
HcoShape check_inputs(const at::Tensor& x, const at::Tensor& E, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be channels-last (B, H, W, C), got shape ", x.sizes());
  TORCH_CHECK(E.dim() == 3, op, ": E must be (H, W, C), got shape ", E.sizes());
  TORCH_CHECK(E.size(0) == x.size(1) && E.size(1) == x.size(2) && E.size(2) == x.size(3), op, ": E shape ",
              E.sizes(), " does not match the (H, W, C) of x shape ", x.sizes());
  check_float(x, op, "x");
  check_float(E, op, "E");
  const HcoShape s{x.size(0), x.size(1), x.size(2), x.size(3)};
  TORCH_CHECK(s.H >= 1 && s.W >= 1 && s.C >= 1, op, ": H, W, C must be >= 1, got x shape ", x.sizes());
  const std::string reason = unsupported_reason(s);
  TORCH_CHECK(reason.empty(), op, ": ", reason);
  TORCH_CHECK(s.C <= INT_MAX && s.H * s.W <= INT_MAX, op, ": x shape ", x.sizes(), " is too large");
  TORCH_CHECK(x.is_cuda() && E.is_cuda(), op, ": the CUDA kernel needs CUDA tensors, got x on ", x.device(),
              " and E on ", E.device());
  TORCH_CHECK(x.device() == E.device(), op, ": x is on ", x.device(), " but E is on ", E.device(),
              "; put both on one device");
  return s;
}

void check_tiles(const TileLaunch& t, const HcoShape& s, const char* op) {
  TORCH_CHECK(t.tc > 0, op, ": planes of H=", s.H, ", W=", s.W, " do not fit this GPU's shared memory (",
              smem_limit(), " bytes per block); use backend='fft'");
}

void check_forward_plan(const ForwardPlan& plan, const HcoShape& s, const char* op) {
  if (plan.path == HcoPath::kFused) {
    check_tiles(plan.fused, s, op);
  } else {
    check_tiles(plan.line_w, s, op);
    check_tiles(plan.line_h, s, op);
  }
}

// The kernels read x and dy with any batch / row / pixel strides as long as the channels
// are contiguous (they load 16-byte vectors of channels): Heat2D's chunk view of a linear
// output, strides (H*W*2C, W*2C, 2C, 1), is read in place. Any other layout (channels not
// innermost, e.g. a permuted NCHW tensor) is copied once here into channels-last.
at::Tensor channels_innermost(const at::Tensor& t) { return t.stride(3) == 1 || t.size(3) == 1 ? t : t.contiguous(); }

PlaneStrides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// Workspace of `elems` acc_t elements (none on the fused forward path).
at::Tensor workspace_for(int64_t elems, const at::TensorOptions& acc_options) {
  return at::empty({elems}, acc_options);
}

// bf16 / fp16 fused kernels keep 16-bit split cosine matrices (their shared-memory layout
// differs; hco_launch.cuh checks the plan against the kernel's type).
template <typename scalar_t>
constexpr bool split16_for() {
  return std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>;
}

at::Tensor hco_forward_cuda(const at::Tensor& x_in, const at::Tensor& E_in) {
  constexpr const char* op = "vheat::hco_forward (CUDA)";
  const HcoShape s = check_inputs(x_in, E_in, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = channels_innermost(x_in);
  const at::Tensor E = E_in.to(compute_dtype(x.scalar_type())).contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (s.B == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vheat_hco_forward_cuda", [&] {
    using acc_t = compute_type_t<scalar_t>;
    const ForwardPlan plan = plan_forward(s, sizeof(acc_t), split16_for<scalar_t>(), smem_limit(), force_lines());
    check_forward_plan(plan, s, op);
    at::Tensor workspace = workspace_for(plan.workspace_elems, E.options());
    launch_hco_forward<scalar_t>(at::cuda::getCurrentCUDAStream(), s, plan, x.const_data_ptr<scalar_t>(),
                                 strides_of(x), E.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(),
                                 workspace.mutable_data_ptr<acc_t>());
  });
  return y;
}

// dx = HCO(dy, E) and dE = sum_b DCT2(x_b) * DCT2(dy_b): one launch on the fused path
// (plus one fixed-order reduce when the batch is split into chunks), see hco_plan.h.
std::tuple<at::Tensor, at::Tensor> hco_backward_cuda(const at::Tensor& gy_in, const at::Tensor& x_in,
                                                     const at::Tensor& E_in, bool need_dx, bool need_dE) {
  constexpr const char* op = "vheat::hco_backward (CUDA)";
  const HcoShape s = check_inputs(x_in, E_in, op);
  TORCH_CHECK(gy_in.is_cuda() && gy_in.device() == x_in.device(), op, ": grad_y is on ", gy_in.device(),
              " but x is on ", x_in.device());
  TORCH_CHECK(gy_in.sizes() == x_in.sizes(), op, ": grad_y shape ", gy_in.sizes(), " must equal x shape ",
              x_in.sizes());
  TORCH_CHECK(gy_in.scalar_type() == x_in.scalar_type(), op, ": grad_y dtype ", gy_in.scalar_type(),
              " must equal x dtype ", x_in.scalar_type());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor gy = channels_innermost(gy_in);
  // x is only read for dE: no copy when only dx is asked for.
  const at::Tensor x = need_dE ? channels_innermost(x_in) : x_in;
  const at::Tensor E = E_in.to(compute_dtype(x.scalar_type())).contiguous();
  at::Tensor dx = need_dx ? at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous))
                          : x_in.new_empty({0});
  // Every element is written by the kernels (B = 0 included: the reduce writes zeros).
  at::Tensor dE_acc = need_dE ? at::empty(E.sizes(), E.options()) : E.new_empty({0});
  if ((need_dx && s.B > 0) || need_dE) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vheat_hco_backward_cuda", [&] {
      using acc_t = compute_type_t<scalar_t>;
      const BackwardPlan plan =
          plan_backward(s, sizeof(acc_t), split16_for<scalar_t>(), smem_limit(), need_dx, need_dE, force_lines());
      if (need_dx) check_forward_plan(plan.forward, s, op);
      if (need_dE && plan.path == HcoPath::kFused) check_tiles(plan.fused, s, op);
      if (need_dE && plan.path == HcoPath::kLines) {
        check_tiles(plan.line_w, s, op);
        check_tiles(plan.line_h, s, op);
      }
      at::Tensor workspace = workspace_for(plan.workspace_elems, E.options());
      launch_hco_backward<scalar_t>(at::cuda::getCurrentCUDAStream(), s, plan, x.const_data_ptr<scalar_t>(),
                                    strides_of(x), gy.const_data_ptr<scalar_t>(), strides_of(gy),
                                    E.const_data_ptr<acc_t>(), need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr,
                                    need_dE ? dE_acc.mutable_data_ptr<acc_t>() : nullptr,
                                    workspace.mutable_data_ptr<acc_t>());
    });
  }
  at::Tensor dE = need_dE ? dE_acc.to(E_in.scalar_type()) : E_in.new_empty({0});
  return {dx, dE};
}

}  // namespace
}  // namespace vheat::cuda

TORCH_LIBRARY_IMPL(vheat, CUDA, m) {
  m.impl("hco_forward", &vheat::cuda::hco_forward_cuda);
  m.impl("hco_backward", &vheat::cuda::hco_backward_cuda);
}
