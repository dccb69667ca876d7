"""Pure-PyTorch formulations of the Heat Conduction Operator (any device, any float dtype).

``hco_matmul_dct`` is the official vHeat computation (four ``conv1d`` against the cosine
matrices plus an einsum); it is the baseline of every benchmark and the reference every
backend is tested against. ``hco_matmul4`` is what a careful user writes instead: the same
four products as plain channels-last ``torch.matmul`` with no copies (a benchmark peer). ``hco_fft`` computes the same operator with DCTs through
``torch.fft`` (Makhoul's reordering), O(HW log HW) instead of O(HW (H + W)).
Both are differentiable through ordinary autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .dct import compute_dtype, dct_matrix


def hco_matmul_dct(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Official vHeat formulation: x (B, H, W, C), E (H, W, C) -> (B, H, W, C)."""
    B, H, W, C = x.shape  # explicit sizes, not -1: the views must also work for B = 0
    cos_h = dct_matrix(H, x.device, x.dtype)
    cos_w = dct_matrix(W, x.device, x.dtype)
    # Same sequence of ops (and contiguous copies) as the official Heat2D.forward.
    y = F.conv1d(x.contiguous().view(B, H, W * C), cos_h.contiguous().view(H, H, 1))
    y = F.conv1d(y.contiguous().view(B * H, W, C), cos_w.contiguous().view(W, W, 1)).contiguous().view(B, H, W, C)
    y = torch.einsum("bnmc,nmc->bnmc", y, E.to(x.dtype))
    y = F.conv1d(y.contiguous().view(B, H, W * C), cos_h.t().contiguous().view(H, H, 1))
    y = F.conv1d(y.contiguous().view(B * H, W, C), cos_w.t().contiguous().view(W, W, 1)).contiguous().view(B, H, W, C)
    return y


def hco_matmul4(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Channels-last 4-matmul HCO: C_H along H over (W*C) columns, then C_W per row, and back."""
    B, H, W, C = x.shape
    cos_h = dct_matrix(H, x.device, x.dtype)
    cos_w = dct_matrix(W, x.device, x.dtype)
    y = torch.matmul(cos_h, x.reshape(B, H, W * C))
    y = torch.matmul(cos_w, y.view(B * H, W, C)).view(B, H, W, C) * E.to(x.dtype)
    y = torch.matmul(cos_w.t(), y.view(B * H, W, C))
    return torch.matmul(cos_h.t(), y.view(B, H, W * C)).view(B, H, W, C)


def dct2_ortho(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Orthonormal DCT-II along ``dim`` through one real FFT of the same length."""
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    v = torch.cat([x[..., ::2], x[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    angle = -math.pi * k / (2 * n)
    out = spec.real * torch.cos(angle) - spec.imag * torch.sin(angle)
    scale = torch.full((n,), math.sqrt(2.0 / n), device=x.device, dtype=x.dtype)
    scale[0] = math.sqrt(1.0 / n)
    return (out * scale).movedim(-1, dim)


def idct2_ortho(X: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`dct2_ortho` (orthonormal DCT-III) along ``dim``."""
    X = X.movedim(dim, -1)
    n = X.shape[-1]
    scale = torch.full((n,), math.sqrt(2.0 / n), device=X.device, dtype=X.dtype)
    scale[0] = math.sqrt(1.0 / n)
    Y = X / scale  # unnormalised DCT-II coefficients y_k = sum_i x_i cos(pi k (2i+1) / 2n)
    k = torch.arange(n, device=X.device, dtype=X.dtype)
    twiddle = torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    # V_k = e^{i pi k / 2n} (y_k - i y_{n-k}) with y_n = 0 is the DFT of the reordered v.
    y_rev = torch.cat([torch.zeros_like(Y[..., :1]), Y[..., 1:].flip(-1)], dim=-1)
    spec = twiddle * torch.complex(Y, -y_rev)
    v = torch.fft.ifft(spec, dim=-1).real
    out = torch.empty_like(v)
    half = (n + 1) // 2
    out[..., ::2] = v[..., :half]
    out[..., 1::2] = v[..., half:].flip(-1)
    return out.movedim(-1, dim)


def dct2_2d(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II over H and W of (B, H, W, C), in fp32 (fp64 for fp64 inputs)."""
    x = x.to(compute_dtype(x.dtype))
    if x.numel() == 0:  # MKL rejects empty transforms; the transform of nothing is nothing
        return x.clone()
    return dct2_ortho(dct2_ortho(x, 1), 2)


def idct2_2d(X: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2_2d` (orthonormal DCT-III over H and W)."""
    X = X.to(compute_dtype(X.dtype))
    if X.numel() == 0:
        return X.clone()
    return idct2_ortho(idct2_ortho(X, 2), 1)


def hco_fft(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """HCO with DCTs through torch.fft; computed in fp32 (fp64 for fp64 inputs)."""
    work = compute_dtype(x.dtype)
    return idct2_2d(dct2_2d(x) * E.to(work)).to(x.dtype)
