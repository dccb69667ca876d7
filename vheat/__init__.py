"""vHeat model family on the vheat_kernels Heat Conduction Operator.

``import vheat`` registers ``vheat_tiny``, ``vheat_small`` and ``vheat_base`` with timm.
"""
from .models import VHeat, vheat_base, vheat_small, vheat_tiny

__all__ = ["VHeat", "vheat_tiny", "vheat_small", "vheat_base"]
