// Autograd of the HCO forward ops (hco_forward, hco_forward_spectrum), every device, in
// C++: a call then runs no Python on the way in or in its backward. Through a Python
// registration (torch.library.register_autograd) a training step's HCO call cost
// 40 us of fixed overhead hot and 280 us with cold caches (1 x 7 x 7 x 16, forward and
// backward), against 14 / 106 us for the two bare ops; inference paid the Python
// autograd kernel too.
//
// The backward ops are called through the dispatcher: under create_graph their own
// autograd (vheat_kernels/autograd.py, any order) records the graph; otherwise they are
// called below autograd, with no Python. Math (X = DCT2(x), y = IDCT2(X * E)):
//   dx = hco_backward(dy, x, E)[dx] = IDCT2(DCT2(dy) * E),  dE = sum_b X * DCT2(dy),
// and for the spectrum pair, whose X is a differentiable output, dx += IDCT2(dX)
// (vheat::idct2_2d, implemented in Python by reference.idct2_2d: only second-order
// passes produce a dX).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using BackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       bool, bool);

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// (dx, dE) for the gradient dy of y from the backward op (saved: x or X, and E). The op is
// recorded by autograd only when the backward itself is differentiated (create_graph).
variable_list gradients(AutogradContext* ctx, const c10::TypedOperatorHandle<BackwardSig>& backward,
                        const at::Tensor& dy) {
  const bool need_dx = ctx->needs_input_grad(0), need_dE = ctx->needs_input_grad(1);
  if (!dy.defined() || !(need_dx || need_dE)) return {at::Tensor(), at::Tensor()};
  const auto saved = ctx->get_saved_variables();
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
  if (!at::GradMode::is_enabled()) below_autograd.emplace();
  // dy usually arrives contiguous (then this is no copy); an expanded one (zero strides,
  // from a .sum()) would be copied by any kernel. The saved x goes as it is, a view included.
  auto [dx, dE] = backward.call(dy.contiguous(), saved[0], saved[1], need_dx, need_dE);
  return {need_dx ? dx : at::Tensor(), need_dE ? dE : at::Tensor()};
}

class HcoForward : public torch::autograd::Function<HcoForward> {
 public:
  static const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&)>& kernel() {
    static const auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&)>("vheat::hco_forward");
    return handle;
  }
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& E) {
    ctx->set_materialize_grads(false);
    // x as given, never copied: the kernels read a view with adjacent channels (Heat2D's
    // chunk of its linear output) in place, in the forward and in the backward.
    ctx->save_for_backward({x, E});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return kernel().call(x, E);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto backward = op<BackwardSig>("vheat::hco_backward");
    return gradients(ctx, backward, grads[0]);
  }
};

// The training pair: saves X = DCT2(x) (fp32; fp64 for double) instead of x.
class HcoForwardSpectrum : public torch::autograd::Function<HcoForwardSpectrum> {
 public:
  using Sig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&);
  static const c10::TypedOperatorHandle<Sig>& kernel() {
    static const auto handle = op<Sig>("vheat::hco_forward_spectrum");
    return handle;
  }
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& E) {
    ctx->set_materialize_grads(false);
    ctx->saved_data["x_dtype"] = x.scalar_type();
    at::Tensor y, X;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(y, X) = kernel().call(x, E);
    }
    ctx->save_for_backward({X, E});
    return {y, X};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto backward = op<BackwardSig>("vheat::hco_backward_spectrum");
    static const auto idct2 = op<at::Tensor(const at::Tensor&)>("vheat::idct2_2d");
    auto out = gradients(ctx, backward, grads[0]);
    if (grads[1].defined() && ctx->needs_input_grad(0)) {  // only on a second-order pass
      const auto dtype = ctx->saved_data["x_dtype"].toScalarType();
      const at::Tensor dx = idct2.call(grads[1]).to(dtype);
      out[0] = out[0].defined() ? out[0] + dx : dx;
    }
    return out;
  }
};

// Without a gradient to record (inference, no_grad) the kernel is called directly: a
// Function would still build and drop a graph node per call.
bool records_graph(const at::Tensor& x, const at::Tensor& E) {
  return at::GradMode::is_enabled() && (x.requires_grad() || E.requires_grad());
}

at::Tensor hco_forward_autograd(const at::Tensor& x, const at::Tensor& E) {
  if (records_graph(x, E)) return HcoForward::apply(x, E);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return HcoForward::kernel().call(x, E);
}

std::tuple<at::Tensor, at::Tensor> hco_forward_spectrum_autograd(const at::Tensor& x, const at::Tensor& E) {
  if (!records_graph(x, E)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return HcoForwardSpectrum::kernel().call(x, E);
  }
  auto out = HcoForwardSpectrum::apply(x, E);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(vheat, Autograd, m) {
  m.impl("hco_forward", &hco_forward_autograd);
  m.impl("hco_forward_spectrum", &hco_forward_spectrum_autograd);
}
