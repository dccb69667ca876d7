"""vHeat's heat-conduction token mixer (Heat2D) and the residual block around it (HeatBlock).

Both work on channels-last (B, H, W, C) tensors, the layout the Heat Conduction Operator
takes, so the official permute/contiguous round trips disappear; parameter names and shapes
are the official ones. The attenuation E = D ** ReLU(Linear(freq_embed)) is computed per
block and call as in the official code, or comes folded as ``k_exp`` in infer mode.
"""
# No ``from __future__ import annotations``: TorchScript reads the @torch.jit.unused method's
# annotations as written, and cannot resolve them from strings.
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.layers import DropPath

from vheat_kernels import attenuation

from . import tracing
from .layers import Mlp
from .linear import FusedLinear


class Heat2D(nn.Module):
    """dwconv3x3 -> Linear(C, 2C) -> (HCO(x) -> LayerNorm) * SiLU(z) -> Linear(C, C).

    Train mode holds ``to_k`` (Linear + ReLU giving the rate map k) and derives E = D ** k
    from the stage's freq embedding on every call; infer mode holds the folded attenuation
    ``k_exp`` = D ** k instead (a frozen Parameter, as the official ``infer_init``), which
    serves the resolution it was folded at only. Which one the module holds is its mode:
    ``fold`` turns one into the other, once (as timm's reparameterisation).
    """

    __jit_unused_properties__ = ["infer_mode"]

    def __init__(self, dim: int, res: int, hco_backend: Optional[str] = None):
        super().__init__()
        self.res = res
        self.hidden_dim = dim
        self.hco_backend = hco_backend
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.linear = FusedLinear(dim, 2 * dim)
        self.out_norm = nn.LayerNorm(dim)
        self.out_linear = FusedLinear(dim, dim)
        self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())

    @property
    def infer_mode(self) -> bool:
        return "k_exp" in self._parameters

    @torch.jit.ignore
    def fold(self, freq: torch.Tensor) -> None:
        """Official ``infer_init_heat2d``: k_exp = D ** to_k(freq), then drop ``to_k``."""
        if self.infer_mode:
            return
        with torch.no_grad():
            k_exp = attenuation(self.to_k(freq)).to(freq.dtype)
        del self.to_k
        self.k_exp = nn.Parameter(k_exp, requires_grad=False)

    def forward(self, x: torch.Tensor, freq: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C). Train mode needs the stage's freq embedding at (H, W)."""
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        # One GEMM then chunk, as the official code: measured faster on CPU than two half-size
        # GEMMs. x and z stay strided views of the (B, H, W, 2C) output (row stride W * 2C,
        # point stride 2C, channels adjacent), which the HCO reads in place: no copy of x.
        x, z = self.linear(x).chunk(2, dim=-1)
        # hasattr, not infer_mode: TorchScript resolves it when compiling.
        if hasattr(self, "k_exp"):
            att = tracing.folded_attenuation(self.k_exp, x)
        else:
            if freq is None:
                raise ValueError(
                    "Heat2D: train mode needs the stage's freq embedding of shape "
                    + str((x.shape[1], x.shape[2], self.hidden_dim))
                )
            att = tracing.attenuation_from_rates(self.to_k(freq))
        x = tracing.hco(x, att, self.hco_backend)
        return self.out_linear(self.out_norm(x) * F.silu(z))

    def extra_repr(self) -> str:
        return f"res={self.res}, infer_mode={self.infer_mode}, hco_backend={self.hco_backend!r}"


class HeatBlock(nn.Module):
    """Residual block: pre-norm ``x + op(norm1(x))`` or post-norm ``x + norm1(op(x))``, then the MLP.

    Layer scale (``gamma1``/``gamma2``) multiplies each branch when ``layer_scale`` is given.
    Norms are LayerNorm over channels with eps 1e-5 (the official LayerNorm2d, here applied
    to channels-last tensors directly).
    """

    def __init__(
        self,
        dim: int,
        res: int,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
        post_norm: bool = True,
        layer_scale: Optional[float] = None,
        hco_backend: Optional[str] = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.op = Heat2D(dim, res, hco_backend=hco_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.post_norm = post_norm
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))
        self.grad_checkpointing = False

    def _forward(self, x: torch.Tensor, freq: Optional[torch.Tensor]) -> torch.Tensor:
        # Written out (no lambdas, hasattr for the optional parts) so that TorchScript compiles it.
        y = self.norm1(self.op(x, freq)) if self.post_norm else self.op(self.norm1(x), freq)
        if hasattr(self, "gamma1"):
            y = y * self.gamma1
        x = x + self.drop_path(y)
        if hasattr(self, "mlp"):
            y = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
            if hasattr(self, "gamma2"):
                y = y * self.gamma2
            x = x + self.drop_path(y)
        return x

    @torch.jit.unused  # TorchScript has no torch.utils.checkpoint: a scripted model raises here
    def _checkpointed_forward(self, x: torch.Tensor, freq: Optional[torch.Tensor]) -> torch.Tensor:
        return checkpoint(self._forward, x, freq, use_reentrant=False)

    def forward(self, x: torch.Tensor, freq: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return self._checkpointed_forward(x, freq)
        return self._forward(x, freq)
