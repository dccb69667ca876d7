"""vHeat models; importing this registers vheat_tiny / vheat_small / vheat_base with timm."""
from .heat import Heat2D, HeatBlock
from .layers import LayerNorm2d, Mlp, StemLayer
from .registry import MODEL_ARGS, checkpoint_env_var, vheat_base, vheat_small, vheat_tiny
from .vheat import HeatStage, VHeat

__all__ = [
    "VHeat",
    "HeatStage",
    "HeatBlock",
    "Heat2D",
    "StemLayer",
    "Mlp",
    "LayerNorm2d",
    "MODEL_ARGS",
    "checkpoint_env_var",
    "vheat_tiny",
    "vheat_small",
    "vheat_base",
]
