"""Cosine and decay maps of the Heat Conduction Operator, cached per (size, device, dtype).

The maps are computed in float64 and cast once, so low-precision callers get the
correctly rounded matrix rather than one built from rounded angles. The cache (``MAPS``) is
an LRU under a byte budget (``map_cache.DEFAULT_BUDGET_BYTES``, 32 MB; ``MAPS.set_budget``
changes it), so a stream of distinct input sizes cannot grow it without bound.
"""
from __future__ import annotations

import math

import torch
from torch._guards import detect_fake_mode

from .map_cache import TensorLRU

MAPS = TensorLRU()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the HCO computes in for inputs of ``dtype``: float64 for float64, else
    float32 (bf16 / fp16 inputs accumulate in fp32; torch.fft has no bf16 kernels). The C++
    kernels keep the same rule in one place (accumulation_type, csrc/cpu)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _cached(key, build):
    """Memoise real tensors only: under FakeTensorMode (opcheck, export, compile tracing)
    the builder yields fake tensors, which must never reach later eager calls."""
    if torch.compiler.is_compiling() or detect_fake_mode() is not None:
        return build(*key[1:])
    return MAPS.get(key, lambda: build(*key[1:]))


def _dct_matrix_build(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    mat = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    mat[0] /= math.sqrt(2.0)
    return mat.to(device=device, dtype=dtype)


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``C[k, i] = s_k cos(pi (i + 1/2) k / n)`` of shape (n, n).

    ``C @ x`` is the DCT-II of ``x`` and ``C.T @ X`` its inverse (DCT-III). The returned
    tensor is shared by every caller with the same arguments: do not modify it in place.
    """
    if n < 1:
        raise ValueError(f"dct_matrix: size must be >= 1, got {n}")
    return _cached(("dct", int(n), torch.device(device), dtype), _dct_matrix_build)


def _decay_map_build(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    n = torch.arange(h, dtype=torch.float64).view(-1, 1) * (math.pi / h)
    m = torch.arange(w, dtype=torch.float64).view(1, -1) * (math.pi / w)
    return torch.exp(-(n * n + m * m)).to(device=device, dtype=dtype)


def decay_map(h: int, w: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Official vHeat decay base ``D[n, m] = exp(-((pi n / h)^2 + (pi m / w)^2))`` of shape (h, w).

    Shared between callers with the same arguments: do not modify it in place.
    """
    if h < 1 or w < 1:
        raise ValueError(f"decay_map: sizes must be >= 1, got ({h}, {w})")
    return _cached(("decay", int(h), int(w), torch.device(device), dtype), _decay_map_build)


def attenuation(k: torch.Tensor) -> torch.Tensor:
    """``E = D ** k`` for a rate map ``k`` of shape (H, W, C), as vHeat computes it.

    Written as ``exp(k * log D)`` so that autograd gives ``dk = dE * E * log D`` directly.
    """
    if k.dim() != 3:
        raise ValueError(f"attenuation: k must have shape (H, W, C), got {tuple(k.shape)}")
    h, w, _ = k.shape
    work = compute_dtype(k.dtype)
    log_d = torch.log(decay_map(h, w, k.device, torch.float64)).to(work)
    return torch.exp(k.to(work) * log_d[:, :, None])
