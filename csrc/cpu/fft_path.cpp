// DCT-II / DCT-III of one axis by Makhoul's reordering and one real FFT of the same length
// (J. Makhoul, "A fast cosine transform in one and two dimensions", 1980); the same
// formulation as vheat_kernels/reference.py (dct2_ortho / idct2_ortho), with rfft / irfft
// so every intermediate holds about as many bytes as the input.
#include "fft_path.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace vheat::cpu {
namespace {

at::Tensor index_tensor(const std::vector<int64_t>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong));
}

// A length-n vector shaped to broadcast along `dim` of a 4-D tensor, in `like`'s dtype.
at::Tensor along(const std::vector<double>& v, int64_t dim, const at::Tensor& like) {
  std::vector<int64_t> shape(4, 1);
  shape[dim] = int64_t(v.size());
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).to(like.scalar_type()).view(shape);
}

double ortho_scale(int64_t k, int64_t n) { return k == 0 ? std::sqrt(1.0 / n) : std::sqrt(2.0 / n); }

// out_k = s_k Re(e^{-i pi k / 2n} V_k), V = FFT(v), v = (x_0, x_2, ..., x_3, x_1). v is real,
// so V_k = conj(V_{n-k}) and the rfft half (k <= n/2) suffices.
at::Tensor dct2_axis(const at::Tensor& x, int64_t dim) {
  const int64_t n = x.size(dim), half = n / 2 + 1;
  if (n == 1) return x.clone();
  std::vector<int64_t> perm(n), fold(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i < (n + 1) / 2 ? 2 * i : 2 * (n - 1 - i) + 1;
  std::vector<double> a(n), b(n);
  for (int64_t k = 0; k < n; ++k) {
    const double theta = M_PI * double(k) / (2.0 * n), s = ortho_scale(k, n);
    fold[k] = k < half ? k : n - k;
    a[k] = s * std::cos(theta);
    b[k] = (k < half ? 1.0 : -1.0) * s * std::sin(theta);
  }
  const at::Tensor V = at::fft_rfft(x.index_select(dim, index_tensor(perm)), n, dim);
  const at::Tensor idx = index_tensor(fold);
  return at::real(V).index_select(dim, idx) * along(a, dim, x) + at::imag(V).index_select(dim, idx) * along(b, dim, x);
}

// Inverse: with Y_k = X_k / s_k (Y_n = 0), V_k = e^{i pi k / 2n} (Y_k - i Y_{n-k}) for
// k <= n/2, v = IRFFT(V), and x = (v_0, v_{n-1}, v_1, v_{n-2}, ...).
at::Tensor idct2_axis(const at::Tensor& X, int64_t dim) {
  const int64_t n = X.size(dim), half = n / 2 + 1;
  if (n == 1) return X.clone();
  std::vector<int64_t> head(half), rev(half), unperm(n);
  std::vector<double> cf(half), sf(half), cr(half), sr(half);
  for (int64_t k = 0; k < half; ++k) {
    const double theta = M_PI * double(k) / (2.0 * n);
    head[k] = k;
    rev[k] = k == 0 ? 0 : n - k;  // Y_n = 0: its coefficients are zero below
    const double inv_k = 1.0 / ortho_scale(k, n), inv_r = k == 0 ? 0.0 : 1.0 / ortho_scale(n - k, n);
    cf[k] = std::cos(theta) * inv_k;  // Re V = cos Y_k + sin Y_{n-k}
    sr[k] = std::sin(theta) * inv_r;
    sf[k] = std::sin(theta) * inv_k;  // Im V = sin Y_k - cos Y_{n-k}
    cr[k] = -std::cos(theta) * inv_r;
  }
  for (int64_t j = 0; j < n; ++j) unperm[j] = j % 2 == 0 ? j / 2 : n - 1 - j / 2;
  const at::Tensor Yk = X.index_select(dim, index_tensor(head));
  const at::Tensor Yr = X.index_select(dim, index_tensor(rev));
  const at::Tensor V = at::complex(Yk * along(cf, dim, X) + Yr * along(sr, dim, X),
                                   Yk * along(sf, dim, X) + Yr * along(cr, dim, X));
  return at::fft_irfft(V, n, dim).index_select(dim, index_tensor(unperm));
}

at::Tensor dct2_hw(const at::Tensor& x) { return dct2_axis(dct2_axis(x, 2), 1); }
at::Tensor idct2_hw(const at::Tensor& X) { return idct2_axis(idct2_axis(X, 1), 2); }

// About 4 MB of fp32 per chunk: temporaries of a few times that, whatever the input size.
constexpr int64_t kChunkElems = int64_t(1) << 20;

// fn(b, c0, channels) over every chunk, batch items and channel ranges in a fixed order.
template <typename Fn>
void for_each_chunk(const at::Tensor& t, Fn&& fn) {
  const int64_t B = t.size(0), plane = t.size(1) * t.size(2), C = t.size(3);
  const int64_t step = std::max<int64_t>(1, std::min<int64_t>(C, kChunkElems / plane));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c0 = 0; c0 < C; c0 += step) fn(b, c0, std::min(step, C - c0));
}

at::Tensor chunk(const at::Tensor& t, int64_t b, int64_t c0, int64_t n) { return t.narrow(0, b, 1).narrow(3, c0, n); }

}  // namespace

void hco_forward_fft(const at::Tensor& x, const at::Tensor& E, at::ScalarType acc, at::Tensor& y,
                     at::Tensor* spectrum) {
  const at::Tensor e = E.to(acc);
  for_each_chunk(x, [&](int64_t b, int64_t c0, int64_t n) {
    at::Tensor X = dct2_hw(chunk(x, b, c0, n).to(acc));
    if (spectrum) chunk(*spectrum, b, c0, n).copy_(X);
    X.mul_(e.narrow(2, c0, n));
    chunk(y, b, c0, n).copy_(idct2_hw(X));
  });
}

at::Tensor hco_backward_fft(const at::Tensor& dy, const at::Tensor& saved, const at::Tensor& E, at::ScalarType acc,
                            bool saved_is_spectrum, at::Tensor* dx) {
  const at::Tensor e = E.to(acc);
  at::Tensor dE = at::zeros(E.sizes(), E.options().dtype(acc));
  for_each_chunk(dy, [&](int64_t b, int64_t c0, int64_t n) {
    at::Tensor G = dct2_hw(chunk(dy, b, c0, n).to(acc));
    const at::Tensor saved_chunk = chunk(saved, b, c0, n);
    dE.narrow(2, c0, n).add_((saved_is_spectrum ? saved_chunk : dct2_hw(saved_chunk.to(acc))).squeeze(0) * G.squeeze(0));
    if (dx) chunk(*dx, b, c0, n).copy_(idct2_hw(G.mul_(e.narrow(2, c0, n))));
  });
  return dE.to(E.scalar_type());
}

}  // namespace vheat::cpu
