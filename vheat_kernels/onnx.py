"""ONNX lowering of the Heat Conduction Operator, for both ``torch.onnx.export`` exporters.

In ONNX terms the operator on x (B, H, W, C) is four MatMuls against the orthonormal DCT-II
matrices and one Mul:

    y = C_H^T @ (C_W^T @ ((C_W @ (C_H @ x)) * E))     (C_H along H, C_W along W)

with the matrices stored as constants (H, W and C are fixed by the exported shapes; the
batch stays dynamic).

- ``dynamo=False`` (TorchScript-based): ``torch.onnx.register_custom_op_symbolic`` for
  ``vheat::hco_forward`` and ``vheat::hco_forward_spectrum``, registered on import of
  vheat_kernels, so graphs that call the compiled ops export as they are.
- ``dynamo=True`` (torch.export + onnxscript): :func:`hco_as_matmuls` is the same graph in
  aten ops; callers use it while ``torch.onnx.is_in_onnx_export()`` (vheat.models does). It is
  not registered as a global decomposition of the ops: FakeTensor would then use it for every
  dynamic-shape trace (torch.compile, opcheck), not only for ONNX.

Nothing here runs outside export; eager and compiled runs keep the fused kernels.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ._extension import extension_available
from .dct import dct_matrix

OPSET = 17


def _dct_constants(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    # Real tensors even while export traces with fake tensors: they become graph constants
    # (ONNX initializers) instead of an arange/cos subgraph.
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    with unset_fake_temporarily(), disable_proxy_modes_tracing():
        return dct_matrix(h, device, dtype).clone(), dct_matrix(w, device, dtype).clone()


def hco_as_matmuls(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """HCO(x, E) as four matmuls and a multiply (aten ops): what the dynamo ONNX exporter records."""
    B, H, W, C = x.shape
    c_h, c_w = _dct_constants(H, W, x.device, x.dtype)
    y = torch.matmul(c_w, torch.matmul(c_h, x.reshape(B, H, W * C)).reshape(B, H, W, C))
    y = torch.matmul(c_w.t(), y * E.to(x.dtype))
    return torch.matmul(c_h.t(), y.reshape(B, H, W * C)).reshape(B, H, W, C)


def _symbolic_spectrum_and_back(g, x, E):
    """TorchScript-exporter graph of the HCO and of DCT2(x) (the spectrum op's second output)."""
    from torch.onnx import symbolic_helper
    from torch.onnx.errors import SymbolicValueError

    # E (H, W, C) carries the static sizes; x's channel count can be symbolic after a chunk.
    sizes = symbolic_helper._get_tensor_sizes(E)
    if sizes is None or len(sizes) != 3 or any(s is None for s in sizes):
        raise SymbolicValueError(
            f"vheat::hco ONNX export needs E of static shape (H, W, C) (only the batch is dynamic); got {sizes}", E
        )
    H, W, C = sizes
    dtype = torch.float64 if x.type().scalarType() == "Double" else torch.float32
    c_h, c_w = dct_matrix(H, "cpu", dtype), dct_matrix(W, "cpu", dtype)

    def const(t):
        return g.op("Constant", value_t=t.contiguous())

    flat, full = const(torch.tensor([-1, H, W * C])), const(torch.tensor([-1, H, W, C]))  # batch inferred
    spectrum = g.op("MatMul", const(c_w), g.op("Reshape", g.op("MatMul", const(c_h), g.op("Reshape", x, flat)), full))
    E = g.op("Cast", E, to_i=symbolic_helper.cast_pytorch_to_onnx[x.type().scalarType()])
    y = g.op("MatMul", const(c_w.t()), g.op("Mul", spectrum, E))
    y = g.op("Reshape", g.op("MatMul", const(c_h.t()), g.op("Reshape", y, flat)), full)
    return y, spectrum


def _symbolic_hco_forward(g, x, E):
    return _symbolic_spectrum_and_back(g, x, E)[0]


def _symbolic_hco_forward_spectrum(g, x, E):
    return _symbolic_spectrum_and_back(g, x, E)


# The TorchScript-exporter symbolics, registered once, on import of vheat_kernels (a no-op
# without the op library, whose ops they lower).
if extension_available():
    torch.onnx.register_custom_op_symbolic("vheat::hco_forward", _symbolic_hco_forward, OPSET)
    torch.onnx.register_custom_op_symbolic("vheat::hco_forward_spectrum", _symbolic_hco_forward_spectrum, OPSET)
