// Schema of the vheat op library. Device implementations register themselves with
// TORCH_LIBRARY_IMPL next to their kernels (cpu/, cuda/), the forward ops' autograd in
// autograd.cpp; fake (meta) kernels and the backward ops' autograd (higher orders) are
// registered from Python (vheat_kernels/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(vheat, m) {
  // y = C_H^T ((C_H x C_W^T) * E) C_W per (batch, channel); x (B, H, W, C), E (H, W, C).
  m.def("hco_forward(Tensor x, Tensor E) -> Tensor");
  // dx = HCO(grad_y, E); dE = sum_b DCT2(x) * DCT2(grad_y) (reduced over the batch in a
  // fixed order). A gradient that is not needed is returned as an empty tensor.
  m.def("hco_backward(Tensor grad_y, Tensor x, Tensor E, bool need_dx, bool need_dE) -> (Tensor, Tensor)");
  // Training pair (CPU): the forward also returns x_hat = DCT2(x) in fp32 (fp64 for double)
  // so the backward skips re-transforming x; x_hat replaces x among the saved tensors.
  m.def("hco_forward_spectrum(Tensor x, Tensor E) -> (Tensor, Tensor)");
  m.def("hco_backward_spectrum(Tensor grad_y, Tensor x_hat, Tensor E, bool need_dx, bool need_dE) -> (Tensor, Tensor)");
  // Orthonormal DCT-III over H and W (the inverse of x_hat = DCT2(x)), differentiable:
  // the spectrum pair's second-order term. Implemented in Python (reference.idct2_2d).
  m.def("idct2_2d(Tensor X) -> Tensor");
}
