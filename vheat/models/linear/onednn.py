"""A linear layer's forward and backward as oneDNN GEMMs (training on a oneDNN machine)."""
from __future__ import annotations

from typing import Optional

import torch


class OneDNNLinearFunction(torch.autograd.Function):
    """y = x @ w.T + b on oneDNN, forward and backward (x 2-D, contiguous).

    The backward is two more oneDNN GEMMs on strided views (no transposed copies); a double
    backward (create_graph) runs through differentiable ``torch.matmul``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            dx = dy @ weight if ctx.needs_input_grad[0] else None
            dw = dy.t() @ x if ctx.needs_input_grad[1] else None
        else:
            dy = dy.contiguous()
            # Transposed operands as strided views: oneDNN reads them in place. For a long
            # reduction (rows >= k, n) dW is computed as (x^T dy)^T, with the row-long operands
            # as oneDNN's "weight" operand, which oneDNN runs faster than dy^T x; for a short
            # one (few rows, as stage 4 at batch 1) dy^T x is the faster form.
            if ctx.needs_input_grad[0]:
                dx = torch.ops.mkldnn._linear_pointwise(dy, weight.t(), None, "none", [], "")
            if ctx.needs_input_grad[1]:
                if x.shape[0] >= max(x.shape[1], dy.shape[1]):
                    dw = torch.ops.mkldnn._linear_pointwise(x.t(), dy.t(), None, "none", [], "").t()
                else:
                    dw = torch.ops.mkldnn._linear_pointwise(dy.t(), x.t(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, dw, db
