"""Building blocks of vHeat that carry no heat-conduction logic.

Module names and parameter shapes follow the official vHeat code so that its
``state_dict`` loads unchanged; the forward passes avoid the official
``.contiguous()`` copies, which lets tensors stay in channels-last memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import layer as fused  # called as fused.linear: torch.fx.wrap patches that module's global


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (official ``LayerNorm2d``, eps 1e-5).

    The permutes are views: on channels-last memory the normalised axis is already
    innermost, and the result comes back channels-last without a copy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """A permute as a module (official ``to_channels_last`` / ``to_channels_first``)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def channels_first_layer_norm(dim: int, eps: float = 1e-6) -> nn.Sequential:
    """Official stem norm: Sequential(to channels-last, LayerNorm, to channels-first).

    Kept as a Sequential so the weights sit at ``norm1.1.*`` like the official keys.
    """
    return nn.Sequential(Permute(0, 2, 3, 1), nn.LayerNorm(dim, eps=eps), Permute(0, 3, 1, 2))


class StemLayer(nn.Module):
    """conv3x3/2 -> LN -> GELU -> conv3x3/2 -> LN: stride-4 patch embedding (official StemLayer)."""

    def __init__(self, in_chans: int = 3, out_chans: int = 96):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = channels_first_layer_norm(out_chans // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = channels_first_layer_norm(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last from the first convolution on (a copy of the 3-channel input, the
        # smallest tensor of the stem): the LayerNorms' permutes are then views, not copies.
        x = self.conv1(x.contiguous(memory_format=torch.channels_last))
        return self.norm2(self.conv2(self.act(self.norm1(x))))


class Mlp(nn.Module):
    """Official channels-first MLP: fc1/fc2 are 1x1 ``Conv2d`` (4-D weights in the state_dict).

    ``forward`` takes channels-last (B, H, W, C) input and runs the 1x1 convolutions as
    linear layers on the flattened weights: the same products, without layout changes (and,
    in inference, with bias and GELU fused into the GEMM: see vheat.models.linear).
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1)
        self.act = nn.GELU()  # the official module tree; forward applies it inside linear()
        self.fc2 = nn.Conv2d(hidden_features, in_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fused.linear(x, self.fc1.weight.flatten(1), self.fc1.bias, activation="gelu")
        x = fused.linear(self.drop(x), self.fc2.weight.flatten(1), self.fc2.bias)
        return self.drop(x)


def make_downsample(dim: int, out_dim: int) -> nn.Sequential:
    """conv3x3/2 (no bias) -> LayerNorm2d, as the official ``make_downsample``."""
    return nn.Sequential(
        nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )
