"""``nn.Module`` form of the Heat Conduction Operator."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .dct import attenuation
from .functional import heat_conduction


class HeatConduction(nn.Module):
    """Applies ``IDCT2(DCT2(x) * D ** k)`` to channels-last ``x`` (B, H, W, C).

    ``forward(x, k)`` takes the rate map ``k`` (H, W, C) (vHeat: ReLU(Linear(freq_embed)));
    ``forward(x, E=...)`` takes a precomputed attenuation (vHeat infer mode: k_exp).
    The decay and cosine maps are cached per (H, W, device, dtype) in vheat_kernels.dct.

    Args:
        backend: this module's backend (the module layer of the precedence in
            vheat_kernels.dispatch); None defers to $VHEAT_HCO_BACKEND, then auto.
    """

    def __init__(self, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend

    def forward(
        self, x: torch.Tensor, k: Optional[torch.Tensor] = None, *, E: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        if (k is None) == (E is None):
            raise ValueError("HeatConduction.forward: pass exactly one of k (rates) or E (attenuation)")
        if E is None:
            E = attenuation(k)
        return heat_conduction(x, E, backend=self.backend)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
