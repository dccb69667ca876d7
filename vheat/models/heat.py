"""vHeat's heat-conduction token mixer (Heat2D) and the residual block around it (HeatBlock).

Both work on channels-last (B, H, W, C) tensors, the layout the Heat Conduction Operator
takes, so the official permute/contiguous round trips disappear; parameter names and shapes
are the official ones. The attenuation E = D ** ReLU(Linear(freq_embed)) is computed per
block as in the official code, or comes folded as ``k_exp`` in infer mode.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.layers import DropPath

from vheat_kernels import attenuation

from . import fused_linear, tracing
from .layers import Mlp


class Heat2D(nn.Module):
    """dwconv3x3 -> Linear(C, 2C) -> (HCO(x) -> LayerNorm) * SiLU(z) -> Linear(C, C).

    Train mode holds ``to_k`` (Linear + ReLU giving the rate map k); infer mode holds the
    folded attenuation ``k_exp`` = D ** k (a frozen Parameter, as in the official
    ``infer_init``). Folding can keep ``to_k`` aside, out of the state_dict, so the module
    can switch back and can still derive E at other resolutions.
    """

    __jit_unused_properties__ = ["infer_mode", "rate_net"]

    def __init__(self, dim: int, res: int, hco_backend: Optional[str] = None):
        super().__init__()
        self.res = res
        self.hidden_dim = dim
        self.hco_backend = hco_backend
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.linear = nn.Linear(dim, 2 * dim)
        self.out_norm = nn.LayerNorm(dim)
        self.out_linear = nn.Linear(dim, dim)
        self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self._set_stash(None)

    # --- train / infer mode -------------------------------------------------------------
    def _set_stash(self, to_k: Optional[nn.Module]) -> None:
        # object.__setattr__ keeps the stashed to_k out of parameters() and state_dict().
        object.__setattr__(self, "_stashed_to_k", to_k)

    @property
    def infer_mode(self) -> bool:
        return "k_exp" in self._parameters

    @property
    def rate_net(self) -> Optional[nn.Module]:
        """``to_k`` whether registered (train mode) or kept aside (infer mode); None if dropped."""
        return self._stashed_to_k if self.infer_mode else self.to_k

    @torch.jit.ignore
    def fold(self, freq: torch.Tensor, keep_train_params: bool = True) -> None:
        """Official ``infer_init_heat2d``: k_exp = D ** to_k(freq), then drop ``to_k``."""
        if self.infer_mode:
            return
        with torch.no_grad():
            k_exp = attenuation(self.to_k(freq)).to(freq.dtype)
        to_k = self.to_k
        del self.to_k
        self.k_exp = nn.Parameter(k_exp, requires_grad=False)
        self._set_stash(to_k if keep_train_params else None)

    @torch.jit.ignore
    def unfold(self) -> None:
        """Back to train mode: restore ``to_k`` and drop ``k_exp``."""
        if not self.infer_mode:
            return
        if self._stashed_to_k is None:
            raise RuntimeError(
                "Heat2D.unfold: this block only has the folded k_exp (its to_k weights were not kept, "
                "e.g. after loading an infer-mode state_dict); load a train-mode checkpoint instead"
            )
        to_k = self._stashed_to_k
        del self.k_exp
        self.to_k = to_k
        self._set_stash(None)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._stashed_to_k is not None:  # follow .to(device / dtype) while stashed
            self._stashed_to_k._apply(fn, recurse)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # A loaded k_exp that differs from ours no longer matches the stashed to_k: forget it,
        # so that switching back cannot silently pair new k_exp weights with old rates.
        new = state_dict.get(prefix + "k_exp")
        if self.infer_mode and new is not None and self._stashed_to_k is not None:
            if new.shape != self.k_exp.shape or not torch.equal(new.to(self.k_exp), self.k_exp):
                self._set_stash(None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    # --- forward --------------------------------------------------------------------------
    @torch.jit.ignore
    def attenuation(self, freq: Optional[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """E (H, W, C) for a feature map of spatial ``size`` given the stage's freq embedding at that size."""
        size = tuple(size)
        if self.infer_mode and tuple(self.k_exp.shape[:2]) == size:
            return self.k_exp
        rate_net = self.rate_net
        if not self.infer_mode and freq is None:
            raise ValueError(f"Heat2D: train mode needs the stage's freq embedding of shape {size + (self.hidden_dim,)}")
        if rate_net is None or freq is None:
            raise RuntimeError(
                f"Heat2D: the folded k_exp is {tuple(self.k_exp.shape[:2])} but the input needs {size}, and "
                "the train-mode weights (to_k, freq_embed) that derive E at other sizes were not kept; "
                "run at the folded resolution or load a train-mode checkpoint"
            )
        return attenuation(rate_net(freq))

    def _traced_attenuation(self, freq: Optional[torch.Tensor]) -> torch.Tensor:
        # No branching on the input's size while tracing: infer mode uses the folded k_exp (the
        # HCO rejects another size when the graph runs), train mode derives E from ``freq``.
        # hasattr, not infer_mode: TorchScript resolves it at compile time.
        if hasattr(self, "k_exp"):
            E = self.k_exp
        else:
            if freq is None:
                raise ValueError("Heat2D: train mode needs the stage's freq embedding")
            E = tracing.attenuation_from_rates(self.to_k(freq))
        return E

    def forward(
        self, x: torch.Tensor, freq: Optional[torch.Tensor] = None, E: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C). Pass the stage's freq embedding at (H, W), or E directly."""
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        # One GEMM then chunk, as the official code: measured faster on CPU than two half-size
        # GEMMs. x and z stay strided views of the (B, H, W, 2C) output (row stride W * 2C,
        # point stride 2C, channels adjacent), which the HCO reads in place: no copy of x.
        if torch.jit.is_scripting():
            x, z = self.linear(x).chunk(2, dim=-1)
        else:
            x, z = fused_linear.linear_module(self.linear, x).chunk(2, dim=-1)
        if E is not None:
            att = E
        elif torch.jit.is_scripting():
            att = self._traced_attenuation(freq)
        elif tracing.is_tracing():
            att = self._traced_attenuation(freq)
        else:
            att = self.attenuation(freq, x.shape[1:3])
        x = tracing.hco(x, att, self.hco_backend)
        x = self.out_norm(x) * F.silu(z)
        if torch.jit.is_scripting():
            return self.out_linear(x)
        else:
            return fused_linear.linear_module(self.out_linear, x)

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

    def _forward(self, x: torch.Tensor, freq: Optional[torch.Tensor], E: Optional[torch.Tensor]) -> torch.Tensor:
        # Written out (no lambdas, hasattr for the optional parts) so that TorchScript compiles it.
        y = self.norm1(self.op(x, freq, E)) if self.post_norm else self.op(self.norm1(x), freq, E)
        if hasattr(self, "gamma1"):
            y = y * self.gamma1
        x = x + self.drop_path(y)
        if hasattr(self, "mlp"):
            y = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
            if hasattr(self, "gamma2"):
                y = y * self.gamma2
            x = x + self.drop_path(y)
        return x

    def forward(
        self, x: torch.Tensor, freq: Optional[torch.Tensor] = None, E: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward(x, freq, E)
        else:
            if self.grad_checkpointing and torch.is_grad_enabled():
                return checkpoint(self._forward, x, freq, E, use_reentrant=False)
            return self._forward(x, freq, E)
