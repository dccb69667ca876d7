"""UPerNet from segmentation-models-pytorch on the timm-registered vHeat encoder ("tu-vheat_tiny").

smp builds the encoder with ``timm.create_model(name, features_only=True, ...)``; extra
keyword arguments reach vHeat's constructor (``img_size``, ``depths``, ``hco_backend``...).
A local classification checkpoint is loaded through timm's pretrained path (vheat's
registry reads local files only), with freq_embed resized to ``img_size``.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

import vheat  # noqa: F401  (registers the vheat_* timm models)


def vheat_upernet(
    num_classes: int,
    variant: str = "vheat_tiny",
    img_size: int = 512,
    checkpoint: Optional[str] = None,
    decoder_channels: int = 512,
    **encoder_kwargs: Any,
) -> nn.Module:
    """smp.UPerNet('tu-<variant>') with vHeat's freq_embed grid for ``img_size``.

    ``checkpoint``: a local vHeat classification checkpoint (official format) for the encoder.
    ``encoder_kwargs`` go to the vHeat constructor (depths, dims, drop_path_rate, hco_backend...).
    Inputs must have H and W divisible by 32 (smp's rule for 5-level encoders).
    """
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:  # optional dependency of the light segmentation path
        raise ImportError("vheat_upernet needs segmentation-models-pytorch: pip install segmentation-models-pytorch") from exc
    if checkpoint is not None:
        encoder_kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint))
    return smp.UPerNet(
        encoder_name=f"tu-{variant}",
        encoder_weights=True if checkpoint is not None else None,  # smp: True -> timm pretrained=True
        classes=num_classes,
        decoder_channels=decoder_channels,
        img_size=img_size,
        **encoder_kwargs,
    )
