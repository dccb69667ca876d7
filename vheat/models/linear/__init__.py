"""vHeat's linear layers: the GEMM library choice (``library``), oneDNN's autograd Function
(``onednn``) and the function and layer the blocks call (``layer``)."""
from .layer import FusedLinear, linear
from .library import (
    MODES,
    ONEDNN_MARGIN,
    calibration,
    describe,
    mode,
    onednn_available,
    pin_training_library,
    set_mode,
    training_library,
    uses_onednn,
    worth_fusing,
)
from .onednn import OneDNNLinearFunction

__all__ = [
    "FusedLinear",
    "linear",
    "MODES",
    "ONEDNN_MARGIN",
    "OneDNNLinearFunction",
    "calibration",
    "describe",
    "mode",
    "onednn_available",
    "pin_training_library",
    "set_mode",
    "training_library",
    "uses_onednn",
    "worth_fusing",
]
