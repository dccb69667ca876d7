// CUDA implementation of vheat::hco_forward / vheat::hco_backward (schema: csrc/ops.cpp).
// Same contract as the CPU kernel (csrc/cpu/hco_cpu.cpp): x (B, H, W, C) channels-last in
// float32 / float64 / bfloat16 / float16 (made contiguous if it is not), E (H, W, C) in any
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

template <typename scalar_t>
void forward_launch(const HcoShape& s, const at::Tensor& x, const at::Tensor& E_acc, at::Tensor& y, const char* op) {
  using acc_t = acc_type_t<scalar_t>;
  const ForwardPlan plan = plan_forward(s, sizeof(acc_t), smem_limit(), force_lines());
  if (plan.path == HcoPath::kFused) {
    check_tiles(plan.fused, s, op);
  } else {
    check_tiles(plan.line_w, s, op);
    check_tiles(plan.line_h, s, op);
  }
  at::Tensor workspace = at::empty({plan.workspace_elems}, E_acc.options());
  launch_hco_forward<scalar_t>(at::cuda::getCurrentCUDAStream(), s, plan, x.const_data_ptr<scalar_t>(),
                               E_acc.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(),
                               workspace.mutable_data_ptr<acc_t>());
}

at::ScalarType acc_type(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor hco_forward_cuda(const at::Tensor& x_in, const at::Tensor& E_in) {
  constexpr const char* op = "vheat::hco_forward (CUDA)";
  const HcoShape s = check_inputs(x_in, E_in, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor E = E_in.to(acc_type(x.scalar_type())).contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (s.B == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vheat_hco_forward_cuda",
                                  [&] { forward_launch<scalar_t>(s, x, E, y, op); });
  return y;
}

template <typename scalar_t>
void grad_E_launch(const HcoShape& s, const at::Tensor& x, const at::Tensor& gy, at::Tensor& dE_acc, const char* op) {
  using acc_t = acc_type_t<scalar_t>;
  const GradEPlan plan = plan_grad_E(s, sizeof(acc_t), smem_limit(), force_lines());
  if (plan.path == HcoPath::kFused) {
    check_tiles(plan.fused, s, op);
  } else {
    check_tiles(plan.line_w, s, op);
    check_tiles(plan.line_h, s, op);
  }
  at::Tensor workspace = at::empty({plan.workspace_elems}, dE_acc.options());
  launch_hco_grad_E<scalar_t>(at::cuda::getCurrentCUDAStream(), s, plan, x.const_data_ptr<scalar_t>(),
                              gy.const_data_ptr<scalar_t>(), dE_acc.mutable_data_ptr<acc_t>(),
                              workspace.mutable_data_ptr<acc_t>());
}

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
  const at::Tensor gy = gy_in.contiguous();
  at::Tensor dx = need_dx ? hco_forward_cuda(gy, E_in) : x_in.new_empty({0});  // self-adjoint in x
  at::Tensor dE = E_in.new_empty({0});
  if (need_dE) {
    const at::Tensor x = x_in.contiguous();
    at::Tensor dE_acc = at::zeros(E_in.sizes(), E_in.options().dtype(acc_type(x.scalar_type())));
    if (s.B > 0) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "vheat_hco_grad_E_cuda",
                                      [&] { grad_E_launch<scalar_t>(s, x, gy, dE_acc, op); });
    }
    dE = dE_acc.to(E_in.scalar_type());
  }
  return {dx, dE};
}

}  // namespace
}  // namespace vheat::cuda

TORCH_LIBRARY_IMPL(vheat, CUDA, m) {
  m.impl("hco_forward", &vheat::cuda::hco_forward_cuda);
  m.impl("hco_backward", &vheat::cuda::hco_backward_cuda);
}
