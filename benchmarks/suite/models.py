"""Model construction and steps shared by the model, resolution and memory sections."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import timm
import torch
import torch.nn.functional as F

import vheat  # noqa: F401  (registers vheat_tiny / _small / _base with timm)
import vheat_kernels as vk

SHORT_NAMES = {
    "vheat_tiny": "vHeat-T", "vheat_small": "vHeat-S", "vheat_base": "vHeat-B",
    "swin_tiny_patch4_window7_224": "Swin-T", "swin_small_patch4_window7_224": "Swin-S",
    "deit_small_patch16_224": "DeiT-S", "convnext_tiny": "ConvNeXt-T",
}


def fused_backend() -> str:
    """The fused HCO: the compiled 'cpu' kernel, or 'fft' where the extension is not built."""
    return "cpu" if vk.extension_available() else "fft"


def create(name: str, img_size: int = 224, num_classes: int = 1000) -> torch.nn.Module:
    """A timm model without weights (nothing is downloaded), built for img_size input."""
    kwargs = {} if name.startswith("convnext") else {"img_size": img_size}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def candidates(name: str, model: torch.nn.Module) -> Dict[str, str]:
    """Label -> HCO backend (None for non-vHeat models): a vHeat model runs fused and official."""
    if not name.startswith("vheat"):
        return {SHORT_NAMES.get(name, name): None}
    short = SHORT_NAMES.get(name, name)
    return {f"{short} fused ({fused_backend()})": fused_backend(), f"{short} official (reference)": "reference"}


def infer_step(model, backend, x) -> Callable[[], object]:
    """One inference forward (eval, vHeat in infer mode with E folded, as deployed)."""
    model.eval()
    if hasattr(model, "set_infer_mode"):
        model.set_infer_mode(True)

    def run():
        if backend is not None:
            model.set_hco_backend(backend)
        with torch.no_grad():
            return model(x)
    return run


def train_step(model, backend, x, y) -> Callable[[], object]:
    """One training step: forward, cross-entropy, backward, AdamW update."""
    if hasattr(model, "set_infer_mode"):
        model.set_infer_mode(False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run():
        if backend is not None:
            model.set_hco_backend(backend)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return run


def batch(n: int, img_size: int, num_classes: int = 1000) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, img_size, img_size), torch.randint(0, num_classes, (n,))
