"""vHeat model family on the vheat_kernels Heat Conduction Operator.

``import vheat`` registers ``vheat_tiny``, ``vheat_small`` and ``vheat_base`` with timm.
"""
from vheat_kernels import __version__  # one version for both packages (one distribution)

from .models import VHeat, vheat_base, vheat_small, vheat_tiny

__all__ = ["__version__", "VHeat", "vheat_tiny", "vheat_small", "vheat_base"]
