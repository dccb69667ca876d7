"""Model construction and steps shared by the model, resolution and memory sections."""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn.functional as F

import vheat  # noqa: F401  (registers vheat_tiny / _small / _base with timm)
import vheat_kernels as vk

from .official_vheat import OfficialVHeat

SHORT_NAMES = {
    "vheat_tiny": "vHeat-T", "vheat_small": "vHeat-S", "vheat_base": "vHeat-B",
    "swin_tiny_patch4_window7_224": "Swin-T", "swin_small_patch4_window7_224": "Swin-S",
    "deit_small_patch16_224": "DeiT-S", "convnext_tiny": "ConvNeXt-T",
}


def fused_backend() -> str:
    """The fused HCO: the compiled 'cpu' kernel, or 'fft' where the extension is not built."""
    return "cpu" if vk.extension_available() else "fft"


def create(name: str, img_size: int = 224, num_classes: int = 1000, **overrides) -> torch.nn.Module:
    """A timm model without weights (nothing is downloaded), built for img_size input; ``overrides``
    go to the model's constructor (tests: a smaller vHeat under the name vheat_tiny)."""
    kwargs = {} if name.startswith("convnext") else {"img_size": img_size}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs, **overrides)


def candidates(name: str, model: torch.nn.Module) -> Dict[str, Tuple[torch.nn.Module, Optional[str]]]:
    """Label -> (model to run, HCO backend or None). vHeat runs three ways on the same weights:

    - ``fused``: our model on the fused HCO (what a user gets by default);
    - ``official``: the official code's computation (OfficialVHeat: NCHW, contiguous copies,
      1x1-conv MLP, matmul-DCT HCO), the baseline of the issue's targets;
    - ``ours + matmul-DCT``: our model with only the HCO swapped for the official
      formulation, which isolates what the fused operator alone is worth.
    """
    short = SHORT_NAMES.get(name, name)
    if not name.startswith("vheat"):
        return {short: (model, None)}
    return {
        f"{short} fused ({fused_backend()})": (model, fused_backend()),
        f"{short} official": (OfficialVHeat.like(model), None),
        f"{short} ours + matmul-DCT": (model, "reference"),
    }


def infer_step(model, backend, x) -> Callable[[], object]:
    """One inference forward (eval, vHeat in infer mode with E folded, as deployed)."""
    model.eval()
    if isinstance(model, OfficialVHeat):
        if not model.infer_mode:
            model.infer_init()
    elif hasattr(model, "set_infer_mode"):
        model = copy.deepcopy(model).set_infer_mode(True)  # folding is one-way: the train steps keep the original

    def run():
        if backend is not None:
            model.set_hco_backend(backend)
        with torch.no_grad():
            return model(x)
    return run


def train_step(model, backend, x, y) -> Callable[[], object]:
    """One training step: forward, cross-entropy, backward, fused AdamW update."""
    if getattr(model, "infer_mode", False):  # folding is one-way, for both model classes
        raise ValueError(f"train_step: this {type(model).__name__} was folded for inference; take a fresh one")
    model.train()
    # Every candidate gets the optimizer `vheat train` builds (vheat.train.recipe): torch's
    # fused AdamW step, the same for all of them.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def run():
        if backend is not None:
            model.set_hco_backend(backend)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return run


def step(mode: str, model, backend, x, y) -> Callable[[], object]:
    """infer_step or train_step, by ``mode`` ('infer' or 'train')."""
    return train_step(model, backend, x, y) if mode == "train" else infer_step(model, backend, x)


def batch_sizes(cfg: Dict, mode: str) -> List[int]:
    """The batch sizes a section runs in ``mode`` (the preset's, before per-model caps)."""
    return cfg["batch_sizes"] if mode == "infer" else cfg["train_batch_sizes"]


def runs_at(cfg: Dict, mode: str, name: str, n: int) -> bool:
    """Whether model ``name`` runs batch ``n`` in ``mode`` (max_batch / max_train_batch cap the big models)."""
    return n <= cfg["max_train_batch" if mode == "train" else "max_batch"].get(name, n)


def batch(n: int, img_size: int, num_classes: int = 1000) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, img_size, img_size), torch.randint(0, num_classes, (n,))
