"""timm registration of vheat_tiny / vheat_small / vheat_base.

``timm.create_model("vheat_tiny", ...)`` works after ``import vheat``. Pretrained weights
come only from local files (nothing is downloaded): pass
``pretrained_cfg_overlay=dict(file="/path/vheat_tiny.pth")`` or set
``$VHEAT_TINY_CHECKPOINT`` (``_SMALL_``, ``_BASE_``). Official checkpoints
(``{"model": ..., "model_ema": ...}``, optional ``module.`` prefix) are read by
vheat.checkpoint_io; ``features_only=True`` uses timm's feature getter (forward_intermediates).
"""
from __future__ import annotations

import os
from typing import Any, Dict

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .vheat import VHeat

# Official configs (classification/configs/vHeat/*.yaml and DESIGN.md).
MODEL_ARGS: Dict[str, Dict[str, Any]] = {
    "vheat_tiny": dict(depths=(2, 2, 6, 2), dims=96, drop_path_rate=0.1, post_norm=False, layer_scale=None),
    "vheat_small": dict(depths=(2, 2, 18, 2), dims=96, drop_path_rate=0.3, post_norm=True, layer_scale=1e-5),
    "vheat_base": dict(depths=(2, 2, 18, 2), dims=128, drop_path_rate=0.5, post_norm=True, layer_scale=1e-5),
}


def checkpoint_env_var(variant: str) -> str:
    """Environment variable naming a local checkpoint for ``variant`` (e.g. VHEAT_TINY_CHECKPOINT)."""
    return f"VHEAT_{variant.split('_', 1)[1].upper()}_CHECKPOINT"


def _cfg(variant: str) -> Dict[str, Any]:
    return dict(
        url="",
        file=os.environ.get(checkpoint_env_var(variant)) or None,
        custom_load=True,  # VHeat.load_pretrained -> vheat.checkpoint_io: the "model" entry, official layouts
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,
        interpolation="bicubic",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        first_conv="patch_embed.conv1",
        classifier="classifier.3",
        license="apache-2.0",
        paper_ids="arXiv:2405.16555",
    )


default_cfgs = generate_default_cfgs({f"{name}.official": _cfg(name) for name in MODEL_ARGS})


def _filter_state_dict(state_dict, model):
    """timm's generic loading path (custom_load=False): official keys -> ours (prefix, freq_embed grids)."""
    from ..checkpoint_io import convert_official_state_dict

    return convert_official_state_dict(state_dict, model)


def _create(variant: str, pretrained: bool = False, **kwargs) -> VHeat:
    if pretrained:
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        file = overlay.get("file") or os.environ.get(checkpoint_env_var(variant))
        if not file:
            raise ValueError(
                f"{variant}: pretrained=True needs a local checkpoint (nothing is downloaded): pass "
                f"pretrained_cfg_overlay=dict(file='/path/{variant}.pth') or set ${checkpoint_env_var(variant)}"
            )
        # timm resets custom_load when a file is supplied; keep it so our loader reads official layouts.
        kwargs["pretrained_cfg_overlay"] = dict(overlay, file=file, custom_load=overlay.get("custom_load", True))
    model_args = dict(MODEL_ARGS[variant], **kwargs)
    if "backend" in model_args:  # short alias of hco_backend
        model_args["hco_backend"] = model_args.pop("backend")
    return build_model_with_cfg(
        VHeat,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        pretrained_filter_fn=_filter_state_dict,
        **model_args,
    )


@register_model
def vheat_tiny(pretrained: bool = False, **kwargs) -> VHeat:
    return _create("vheat_tiny", pretrained, **kwargs)


@register_model
def vheat_small(pretrained: bool = False, **kwargs) -> VHeat:
    return _create("vheat_small", pretrained, **kwargs)


@register_model
def vheat_base(pretrained: bool = False, **kwargs) -> VHeat:
    return _create("vheat_base", pretrained, **kwargs)
