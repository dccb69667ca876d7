// Calls vheat::hco_forward / vheat::hco_backward through the c10 dispatcher on CPU tensors,
// as a LibTorch program would, and compares with a naive float64 loop of the HCO:
//   X[n, m] = sum_{h, w} C_H[n, h] C_W[m, w] x[h, w]      y = sum_{n, m} C_H[n, h] C_W[m, w] E[n, m] X[n, m]
// dx = HCO(grad_y, E) and dE = sum_b X_b * G_b. Exit code 0 when every check passes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

double coef(int64_t k, int64_t i, int64_t n) {
  const double scale = k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n);
  return scale * std::cos(M_PI * (i + 0.5) * k / n);
}

// DCT2 over (H, W) of every (b, c) plane of a (B, H, W, C) float64 tensor, by the triple
// sums of the definition (no separability), or its inverse.
at::Tensor naive_dct2(const at::Tensor& t, bool inverse) {
  const int64_t B = t.size(0), H = t.size(1), W = t.size(2), C = t.size(3);
  auto in = t.accessor<double, 4>();
  at::Tensor out = at::zeros_like(t);
  auto o = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < H; ++n)
      for (int64_t m = 0; m < W; ++m)
        for (int64_t c = 0; c < C; ++c) {
          double s = 0;
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w)
              s += (inverse ? coef(h, n, H) * coef(w, m, W) : coef(n, h, H) * coef(m, w, W)) * in[b][h][w][c];
          o[b][n][m][c] = s;
        }
  return out;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double tol, const char* what, at::IntArrayRef shape,
                  at::ScalarType dtype) {
  const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
  const double bound = tol * (1.0 + want.abs().max().item<double>());
  const bool ok = got.sizes() == want.sizes() && std::isfinite(err) && err <= bound;
  std::printf("%s %-8s %-7s shape %-16s max err %.3g (tol %.3g)\n", ok ? "ok  " : "FAIL", what,
              c10::toString(dtype), c10::str(shape).c_str(), err, bound);
  if (!ok) ++failures;
}

}  // namespace

int main() {
  at::manual_seed(0);
  auto forward = c10::Dispatcher::singleton()
                     .findSchemaOrThrow("vheat::hco_forward", "")
                     .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  auto backward = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("vheat::hco_backward", "")
                      .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, bool, bool)>();
  const std::vector<std::vector<int64_t>> shapes = {{2, 5, 7, 3}, {1, 1, 6, 4}, {3, 13, 1, 2}, {2, 8, 11, 17}};
  for (const auto& shape : shapes) {
    for (const auto dtype : {at::kFloat, at::kDouble}) {
      const double tol = dtype == at::kFloat ? 2e-6 : 1e-12;
      const at::Tensor x64 = at::randn(shape, at::kDouble);
      const at::Tensor gy64 = at::randn(shape, at::kDouble);
      const at::Tensor E64 = at::rand({shape[1], shape[2], shape[3]}, at::kDouble);
      const at::Tensor x = x64.to(dtype), gy = gy64.to(dtype), E = E64.to(dtype);
      // The oracle sees the rounded inputs, so only the kernel's arithmetic is measured.
      const at::Tensor X = naive_dct2(x.to(at::kDouble), false), G = naive_dct2(gy.to(at::kDouble), false);
      const at::Tensor Ed = E.to(at::kDouble);
      const at::Tensor y_want = naive_dct2(X * Ed, true);
      const at::Tensor dx_want = naive_dct2(G * Ed, true);
      const at::Tensor dE_want = (X * G).sum(0);

      expect_close(forward.call(x, E), y_want, tol, "forward", shape, dtype);
      auto [dx, dE] = backward.call(gy, x, E, true, true);
      expect_close(dx, dx_want, tol, "dx", shape, dtype);
      expect_close(dE, dE_want, tol * std::sqrt(double(shape[0])), "dE", shape, dtype);
      if (dE.scalar_type() != E.scalar_type()) {
        std::printf("FAIL dE dtype %s, expected E's %s\n", c10::toString(dE.scalar_type()), c10::toString(dtype));
        ++failures;
      }
      auto [no_dx, only_dE] = backward.call(gy, x, E, false, true);
      if (no_dx.numel() != 0) {
        std::printf("FAIL need_dx=false must return an empty dx\n");
        ++failures;
      }
      expect_close(only_dE, dE_want, tol * std::sqrt(double(shape[0])), "dE only", shape, dtype);
    }
  }
  // A bad call raises a c10::Error that says what was wrong.
  try {
    forward.call(at::randn({2, 3, 4}), at::rand({3, 4, 1}));
    std::printf("FAIL a 3-D x was accepted\n");
    ++failures;
  } catch (const c10::Error& e) {
    std::printf("ok   3-D x rejected: %s\n", e.what_without_backtrace());
  }
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all vheat CPU op checks passed\n");
  return 0;
}
