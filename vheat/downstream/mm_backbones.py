"""VHeatBackbone registered with mmdetection (``MMDET_VHEAT``) and mmsegmentation (``MMSEG_VHEAT``).

Optional extra (scripts/install_mm_extra.sh). The official names and constructor arguments
are kept, so configs written for the official code work after
``custom_imports = dict(imports=["vheat.downstream.mm_backbones"])``; parameter names are the
official ones too (``backbone.layers...``, ``backbone.outnorm{i}``), so official downstream
checkpoints load. Arguments the official wrapper accepted and ignored (norm_layer,
patch_norm, drop_rate, attn_drop_rate) are accepted and ignored here as well.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from mmengine.model import BaseModule

from .backbone import VHeatBackbone

IGNORED_OFFICIAL_ARGS = ("norm_layer", "patch_norm", "drop_rate", "attn_drop_rate", "num_classes")


class MMVHeatBackbone(VHeatBackbone, BaseModule):
    """VHeatBackbone as an mmengine BaseModule (init_cfg, init_weights; pretrained= loads at build).

    Official defaults: depths (2, 2, 9, 2), dims 96, drop_path_rate 0.1, post_norm True,
    img_size 224. ``pretrained`` is a classification checkpoint; its freq_embed grids are
    fitted to ``img_size`` by ``freq_embed_fit`` ('pad' = the official interpolate4downstream).
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: Any = 96,
        drop_path_rate: float = 0.1,
        post_norm: bool = True,
        layer_scale: Optional[float] = None,
        use_checkpoint: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        pretrained: Optional[str] = None,
        img_size: int = 224,
        init_cfg: Optional[dict] = None,
        **kwargs: Any,
    ):
        for name in IGNORED_OFFICIAL_ARGS:
            kwargs.pop(name, None)
        # MRO: VHeat.__init__'s super().__init__() runs BaseModule.__init__ (init_cfg=None) first.
        super().__init__(
            depths=depths, dims=dims, drop_path_rate=drop_path_rate, post_norm=post_norm, layer_scale=layer_scale,
            use_checkpoint=use_checkpoint, out_indices=out_indices, pretrained=pretrained, img_size=img_size, **kwargs,
        )
        self.init_cfg = init_cfg

    def init_weights(self) -> None:
        # Weights are initialised (and pretrained ones loaded) in __init__; only an explicit
        # init_cfg (e.g. type='Pretrained' with a detector checkpoint) does more.
        if self.init_cfg is not None:
            BaseModule.init_weights(self)


def _register() -> list:
    registered = []
    try:
        from mmdet.registry import MODELS as DET_MODELS
    except ImportError:
        DET_MODELS = None
    try:
        from mmseg.registry import MODELS as SEG_MODELS
    except ImportError:
        SEG_MODELS = None
    if DET_MODELS is None and SEG_MODELS is None:
        raise ImportError("vheat.downstream.mm_backbones needs mmdet or mmseg (scripts/install_mm_extra.sh)")
    if DET_MODELS is not None:
        DET_MODELS.register_module(name="MMDET_VHEAT", module=MMVHeatBackbone, force=True)
        registered.append("mmdet:MMDET_VHEAT")
    if SEG_MODELS is not None:
        SEG_MODELS.register_module(name="MMSEG_VHEAT", module=MMVHeatBackbone, force=True)
        registered.append("mmseg:MMSEG_VHEAT")
    return registered


REGISTERED = _register()
