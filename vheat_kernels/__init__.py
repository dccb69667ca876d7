"""vheat_kernels: fused kernels for vHeat's Heat Conduction Operator (HCO).

    y = heat_conduction(x, E)          # x (B, H, W, C) channels-last, E (H, W, C)
    y = HeatConduction()(x, k)         # E = D ** k with the official decay map D
"""
from . import ops  # noqa: F401  (registers fake kernels / autograd of the compiled ops)
from . import onnx  # noqa: F401  (registers the ONNX lowering of the compiled ops)
from ._extension import ExtensionMissingError, build_info, extension_available
from .dct import attenuation, dct_matrix, decay_map
from .dispatch import ENV_VAR, BackendUnavailableError, available_backends, backend_names, resolve_backend
from .functional import heat_conduction, heat_conduction_from_rates
from .modules import HeatConduction

__version__ = "0.1.0"  # the one place of the package version (pyproject.toml reads it)

__all__ = [
    "heat_conduction",
    "heat_conduction_from_rates",
    "HeatConduction",
    "attenuation",
    "dct_matrix",
    "decay_map",
    "available_backends",
    "backend_names",
    "resolve_backend",
    "build_info",
    "extension_available",
    "BackendUnavailableError",
    "ExtensionMissingError",
    "ENV_VAR",
]
