"""Dense prediction with vHeat: the detection/segmentation backbone and checkpoint conversion."""
from .backbone import VHeatBackbone
from .freq_embed import fit_freq_embed

__all__ = ["VHeatBackbone", "fit_freq_embed"]
