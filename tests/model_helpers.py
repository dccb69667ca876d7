"""The micro vHeat models the model, export, checkpoint and downstream tests build (no tests here).

``MICRO``: four stages on a 64 px input (stage grids 16, 8, 4, 2), small enough for one thread.
A test that needs other values says so with ``dict(MICRO, dims=8)`` and the like.
"""
import math

import timm
import torch

import vheat  # noqa: F401  (registers the timm models)
from vheat.models import VHeat

MICRO = dict(depths=(1, 1, 2, 1), dims=16, img_size=64)


def random_micro(post_norm: bool = True, layer_scale=0.5, seed: int = 0, **kw) -> VHeat:
    """A 10-class micro model with weights large enough that every part (E, resizing, gammas) matters."""
    torch.manual_seed(seed)
    model = VHeat(**dict(MICRO, num_classes=10, post_norm=post_norm, layer_scale=layer_scale, drop_path_rate=0.0, **kw))
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.startswith("freq_embed"):
                prm.normal_(0.0, 1.0)
            elif name.endswith("to_k.0.weight"):
                prm.normal_(0.0, 1.0 / math.sqrt(prm.shape[1]))
            elif prm.dim() == 1:
                prm.add_(torch.randn_like(prm) * 0.1)
    return model


def random_weights(model: VHeat, seed: int = 0) -> VHeat:
    """Weights large enough that every part (E, freq_embed, head) changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def timm_micro(seed: int = 0, **kw) -> VHeat:
    """``timm.create_model("vheat_tiny")`` at MICRO's depths with dims 8, random weights, eval mode."""
    return random_weights(timm.create_model("vheat_tiny", **dict(dict(MICRO, dims=8), **kw)), seed).eval()


def same_weights(a: VHeat, b: VHeat, skip=()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)
