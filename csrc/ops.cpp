// Schema of the vheat op library. Device implementations register themselves with
// TORCH_LIBRARY_IMPL next to their kernels (cpu/, cuda/); fakes and autograd (every order,
// one pair for every backend) are registered from Python: vheat_kernels/ops.py, which
// reads top to bottom from this schema to the backends' calls.
#include <torch/library.h>

TORCH_LIBRARY(vheat, m) {
  // y = C_H^T ((C_H x C_W^T) * E) C_W per (batch, channel); x (B, H, W, C), E (H, W, C).
  m.def("hco_forward(Tensor x, Tensor E) -> Tensor");
  // dx = HCO(grad_y, E); dE = sum_b DCT2(x) * DCT2(grad_y) (reduced over the batch in a
  // fixed order). A gradient that is not needed is returned as an empty tensor.
  m.def("hco_backward(Tensor grad_y, Tensor x, Tensor E, bool need_dx, bool need_dE) -> (Tensor, Tensor)");
  // The spectrum pair (CPU): the forward also returns spectrum = DCT2(x) in fp32 (fp64 for
  // double), saved instead of x, so the backward skips re-transforming x.
  m.def("hco_forward_spectrum(Tensor x, Tensor E) -> (Tensor, Tensor)");
  m.def("hco_backward_spectrum(Tensor grad_y, Tensor spectrum, Tensor E, bool need_dx, bool need_dE) -> (Tensor, Tensor)");
}
