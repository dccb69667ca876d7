"""The official vHeat model as its code runs it: the baseline of the whole-model benchmarks.

A restatement of the official ``vHeat`` class (MzeroMiko/vHeat, classification/models) with
the official op sequence and memory traffic; of ours it shares only the stem's
permute-LayerNorm-permute and the constant cosine / decay maps. NCHW activations between
blocks, ``LayerNorm2d`` as permute -> contiguous copy -> layer_norm -> permute -> contiguous
copy, the MLP as 1x1 ``Conv2d`` on NCHW, ``Heat2D`` as dwconv -> permute + contiguous ->
Linear -> chunk -> four ``conv1d`` against the cosine maps with a ``.contiguous()`` around
each -> einsum with ``D ** to_k(freq_embed)`` -> LayerNorm -> gate -> Linear -> permute +
contiguous. Cosine and decay maps are cached per resolution, as the official code does.

Parameter names and shapes are the official ones (and therefore ours), so
``OfficialVHeat(**kwargs).load_state_dict(vheat_model.state_dict())`` gives the same
weights; ``tests/test_benchmarks.py`` checks it against the official golden logits.
Runs only at its training resolution, like the official classifier.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath

from vheat.models.layers import channels_first_layer_norm  # the official stem norm: permutes are views there too
from vheat_kernels import dct_matrix, decay_map  # the official cosine and decay maps (constants)


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1).contiguous(), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class _Stem(nn.Module):
    def __init__(self, in_chans, out_chans):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, 3, stride=2, padding=1)
        self.norm1 = channels_first_layer_norm(out_chans // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, 3, stride=2, padding=1)
        self.norm2 = channels_first_layer_norm(out_chans)

    def forward(self, x):
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class _Mlp(nn.Module):  # channels_first=True: 1x1 convolutions on NCHW
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Heat2D(nn.Module):
    def __init__(self, dim, res):
        super().__init__()
        self.res = res
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.linear = nn.Linear(dim, 2 * dim)
        self.out_norm = nn.LayerNorm(dim)
        self.out_linear = nn.Linear(dim, dim)
        self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.infer_mode = False
        self._maps = None  # (H, W, device, cos_h, cos_w, decay): the official per-module cache

    def infer_init(self, freq):
        _, _, decay = self._cached_maps(self.res, self.res, freq.device)
        self.k_exp = nn.Parameter(torch.pow(decay[:, :, None], self.to_k(freq)), requires_grad=False)
        del self.to_k
        self.infer_mode = True

    def _cached_maps(self, h, w, device):
        if self._maps is None or self._maps[:3] != (h, w, device):
            # clones: the official code holds its own maps per module (the project's are shared)
            maps = (dct_matrix(h, device), dct_matrix(w, device), decay_map(h, w, device))
            self._maps = (h, w, device, *(m.clone() for m in maps))
        return self._maps[3:]

    def forward(self, x, freq_embed=None):
        B, C, H, W = x.shape
        x = self.linear(self.dwconv(x).permute(0, 2, 3, 1).contiguous())
        x, z = x.chunk(2, dim=-1)
        cos_h, cos_w, decay = self._cached_maps(H, W, x.device)
        N, M = H, W
        x = F.conv1d(x.contiguous().view(B, H, -1), cos_h.contiguous().view(N, H, 1))
        x = F.conv1d(x.contiguous().view(-1, W, C), cos_w.contiguous().view(M, W, 1)).contiguous().view(B, N, M, -1)
        E = self.k_exp if self.infer_mode else torch.pow(decay[:, :, None], self.to_k(freq_embed))
        x = torch.einsum("bnmc,nmc->bnmc", x, E)
        x = F.conv1d(x.contiguous().view(B, N, -1), cos_h.t().contiguous().view(H, N, 1))
        x = F.conv1d(x.contiguous().view(-1, M, C), cos_w.t().contiguous().view(W, M, 1)).contiguous().view(B, H, W, -1)
        x = self.out_linear(self.out_norm(x) * F.silu(z))
        return x.permute(0, 3, 1, 2).contiguous()


class _HeatBlock(nn.Module):
    def __init__(self, dim, res, drop_path, post_norm, layer_scale):
        super().__init__()
        self.norm1 = _LayerNorm2d(dim)
        self.op = _Heat2D(dim, res)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = _LayerNorm2d(dim)
        self.mlp = _Mlp(dim, 4 * dim)
        self.post_norm = post_norm
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x, freq_embed):
        g1 = self.gamma1[:, None, None] if self.layer_scale else 1.0
        g2 = self.gamma2[:, None, None] if self.layer_scale else 1.0
        if self.post_norm:
            x = x + self.drop_path(g1 * self.norm1(self.op(x, freq_embed)))
            return x + self.drop_path(g2 * self.norm2(self.mlp(x)))
        x = x + self.drop_path(g1 * self.op(self.norm1(x), freq_embed))
        return x + self.drop_path(g2 * self.mlp(self.norm2(x)))


class _Stage(nn.Sequential):  # official AdditionalInputSequential
    def forward(self, x, freq_embed=None):
        for block in self[:-1]:
            x = block(x, freq_embed)
        return self[-1](x)


class OfficialVHeat(nn.Module):
    """Official vHeat (4 stages, mlp_ratio 4). Takes the keyword arguments of ``vheat.models.VHeat``."""

    def __init__(self, depths: Sequence[int] = (2, 2, 9, 2), dims=96, num_classes: int = 1000, img_size: int = 224,
                 drop_path_rate: float = 0.2, post_norm: bool = True, layer_scale: Optional[float] = None,
                 in_chans: int = 3, **_ignored):
        super().__init__()
        dims = [int(dims * 2**i) for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        res0 = img_size / 4
        self.res = [int(res0 // 2**i) if i else int(res0) for i in range(len(depths))]
        self.patch_embed = _Stem(in_chans, dims[0])
        self.freq_embed = nn.ParameterList([nn.Parameter(torch.zeros(r, r, d)) for r, d in zip(self.res, dims)])
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            blocks = [_HeatBlock(dims[i], self.res[i], dpr[sum(depths[:i]) + d], post_norm, layer_scale) for d in range(depth)]
            down = (nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1, bias=False), _LayerNorm2d(dims[i + 1]))
                    if i < len(depths) - 1 else nn.Identity())
            self.layers.append(_Stage(*blocks, down))
        self.classifier = nn.Sequential(_LayerNorm2d(dims[-1]), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dims[-1], num_classes))
        self.infer_mode = False

    @classmethod
    def like(cls, model: nn.Module, **kwargs) -> "OfficialVHeat":
        """The official model with ``model``'s weights (a vheat.models.VHeat in train mode)."""
        if model.infer_mode:
            raise ValueError("OfficialVHeat.like: pass the model in train mode (freq_embed and to_k present)")
        block0 = model.layers[0].blocks[0]
        config = dict(depths=model.depths, dims=model.dims, num_classes=model.num_classes, img_size=model.res[0] * 4,
                      post_norm=block0.post_norm, layer_scale=1.0 if block0.layer_scale else None,  # gammas are loaded
                      drop_path_rate=getattr(model.layers[-1].blocks[-1].drop_path, "drop_prob", 0.0))  # linspace's end
        official = cls(**{**config, **kwargs})
        official.load_state_dict(model.state_dict(), strict=True)
        return official

    @torch.no_grad()
    def infer_init(self) -> "OfficialVHeat":
        for i, stage in enumerate(self.layers):
            for block in stage[:-1]:
                block.op.infer_init(self.freq_embed[i])
        del self.freq_embed
        self.infer_mode = True
        return self

    def forward(self, x):
        x = self.patch_embed(x)
        for i, stage in enumerate(self.layers):
            x = stage(x, None if self.infer_mode else self.freq_embed[i])
        return self.classifier(x)
