// The HCO through ATen's FFT (MKL or pocketfft): O(N log N) time and O(N) tables for any
// side, used where the fused plane kernels would need a dense DCT block larger than
// kDenseBlockMax (odd and prime sides: their tables and work grow with N^2). Works on
// chunks of (one batch item, kChunkElems / (H W) channels), so its temporaries (the
// reordered lines, rfft spectra, MKL's Bluestein buffers) stay bounded at any input size.
#pragma once

#include <ATen/ATen.h>

namespace vheat::cpu {

// y = IDCT2(DCT2(x) * E) for x (B, H, W, C); y preallocated in x's dtype. With `spectrum`
// (preallocated in the accumulation dtype acc: fp32, fp64 for double), DCT2(x) too.
void hco_forward_fft(const at::Tensor& x, const at::Tensor& E, at::ScalarType acc, at::Tensor& y,
                     at::Tensor* spectrum);

// dE (returned in E's dtype) = sum_b DCT2(x) * DCT2(dy), where saved is x, or with
// saved_is_spectrum its spectrum DCT2(x); and, with dx (preallocated like dy), dx = IDCT2(DCT2(dy) * E).
at::Tensor hco_backward_fft(const at::Tensor& dy, const at::Tensor& saved, const at::Tensor& E, at::ScalarType acc,
                            bool saved_is_spectrum, at::Tensor* dx);

}  // namespace vheat::cpu
