"""Mask R-CNN from torchvision on a vHeat backbone + FPN: the detection path without compiled extras.

``vheat_maskrcnn`` mirrors the official mmdet model at the architecture level (vHeat
stage features with outnorm -> 256-channel FPN with an extra max-pooled level -> RPN ->
RoIAlign box and mask heads); torchvision's heads, losses and transform are used as they are.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Optional, Union

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbone import VHeatBackbone


class VHeatFPN(nn.Module):
    """VHeatBackbone -> torchvision FeaturePyramidNetwork (+ max-pool level), as BackboneWithFPN.

    ``forward`` returns an OrderedDict '0', '1', ... (one per out_index) and 'pool', each with
    ``out_channels`` channels, which is what torchvision's detection models take.
    """

    def __init__(self, backbone: VHeatBackbone, out_channels: int = 256):
        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.featmap_names = [str(i) for i in range(len(backbone.out_channels))]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict(zip(self.featmap_names, feats)))


def vheat_maskrcnn(
    num_classes: int,
    backbone: Union[VHeatBackbone, Dict[str, Any]],
    fpn_channels: int = 256,
    anchor_base_size: int = 32,
    **maskrcnn_kwargs: Any,
) -> MaskRCNN:
    """torchvision MaskRCNN on ``backbone`` (a VHeatBackbone or its keyword arguments).

    Anchors: one size per pyramid level, ``anchor_base_size * 2**level`` (32..512 for 4 stages
    + pool, torchvision's and mmdet's default), aspect ratios 0.5, 1, 2; RoIAlign 7x7 (boxes)
    and 14x14 (masks) over the stage levels. ``maskrcnn_kwargs`` go to MaskRCNN (min_size,
    max_size, image_mean, ...).
    """
    if isinstance(backbone, dict):
        backbone = VHeatBackbone(**backbone)
    if not isinstance(backbone, VHeatBackbone):
        raise TypeError(f"vheat_maskrcnn: backbone must be a VHeatBackbone or its kwargs, got {type(backbone).__name__}")
    body = VHeatFPN(backbone, fpn_channels)
    levels = len(body.featmap_names) + 1  # + the max-pooled level
    maskrcnn_kwargs.setdefault(
        "rpn_anchor_generator",
        AnchorGenerator(tuple((anchor_base_size * 2**i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels),
    )
    maskrcnn_kwargs.setdefault("box_roi_pool", MultiScaleRoIAlign(body.featmap_names, output_size=7, sampling_ratio=2))
    maskrcnn_kwargs.setdefault("mask_roi_pool", MultiScaleRoIAlign(body.featmap_names, output_size=14, sampling_ratio=2))
    return MaskRCNN(body, num_classes=num_classes, **maskrcnn_kwargs)
