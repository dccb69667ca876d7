"""Functional entry point of the Heat Conduction Operator."""
from __future__ import annotations

from typing import Optional

import torch

from . import backends as _backends  # noqa: F401  (registers the backends)
from .checks import check_hco_inputs
from .dct import attenuation
from .dispatch import resolve_backend


def heat_conduction(
    x: torch.Tensor, E: torch.Tensor, *, backend: Optional[str] = None, check_values: bool = False
) -> torch.Tensor:
    """Heat Conduction Operator ``IDCT2(DCT2(x) * E)`` over H and W, per batch and channel.

    Args:
        x: channels-last features (B, H, W, C); float32, float64, bfloat16 or float16.
            Any strides: a view whose channels are adjacent (stride 1), such as a chunk of
            a wider tensor, is read in place by the fused kernels; another layout is
            copied once by the backend.
        E: attenuation (H, W, C) on x's device; any float dtype (kernels compute in fp32).
        backend: 'auto', 'reference', 'fft', 'cpu', 'triton' or 'cuda'; None defers to
            $VHEAT_HCO_BACKEND, then 'auto'. A named backend that cannot run raises.
        check_values: also reject NaN/Inf/negative E (costs a pass over E and a sync).

    Returns:
        (B, H, W, C) tensor in x's dtype. Differentiable in x and E on every backend.
    """
    check_hco_inputs(x, E, check_values=check_values)
    return resolve_backend(x, E, backend).fn(x, E)


def heat_conduction_from_rates(
    x: torch.Tensor, k: torch.Tensor, *, backend: Optional[str] = None
) -> torch.Tensor:
    """HCO with ``E = D ** k`` for a rate map ``k`` (H, W, C) and the official decay map D."""
    return heat_conduction(x, attenuation(k), backend=backend)
