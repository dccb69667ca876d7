"""vHeat models; importing this registers vheat_tiny / vheat_small / vheat_base with timm."""
from .heat import Heat2D, HeatBlock
from .layers import LayerNorm2d, Mlp, StemLayer
from .linear import FusedLinear
from .vheat import MODEL_ARGS, HeatStage, VHeat, checkpoint_filter_fn, vheat_base, vheat_small, vheat_tiny

__all__ = [
    "VHeat",
    "HeatStage",
    "HeatBlock",
    "Heat2D",
    "StemLayer",
    "Mlp",
    "FusedLinear",
    "LayerNorm2d",
    "MODEL_ARGS",
    "checkpoint_filter_fn",
    "vheat_tiny",
    "vheat_small",
    "vheat_base",
]
