"""FLOPs and parameters with fvcore, counted on the official matmul-DCT formulation.

The HCO runs on the 'reference' backend while counting, so the four cosine matmuls and
the einsum are visible to fvcore exactly as in the official code's figures (a fused or
compiled op would be an opaque node that fvcore skips).
"""
from __future__ import annotations

import logging
import warnings

import torch

from .config import ConfigError
from .model_factory import build_model, hco_backend


def count_flops(cfg: dict, num_classes: int = 1000, infer_mode: bool = False) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore calls torch.jit.script on import
        from fvcore.nn import FlopCountAnalysis

    size = cfg["data"]["img_size"]
    num_classes = cfg["model"]["num_classes"] or num_classes
    with hco_backend("reference"):
        model = build_model(dict(cfg, model=dict(cfg["model"], hco_backend="auto")), num_classes).eval()
        if infer_mode:
            init = getattr(model, "infer_init", None)
            if init is None:
                raise ConfigError(f"{cfg['model']['name']} has no infer_init(): it has no inference-mode folding")
            init()
        x = torch.randn(1, 3, size, size)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # fvcore's own torch.jit.script use
            analysis = FlopCountAnalysis(model, (x,))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = analysis.total()
            unsupported = dict(analysis.unsupported_ops())
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for name, b in model.named_buffers() if "k_exp" in name)
    return {"model": cfg["model"]["name"], "img_size": size, "infer_mode": infer_mode, "gflops": total / 1e9,
            "params_m": params / 1e6, "k_exp_buffers_m": buffers / 1e6,
            "unsupported_ops": {str(k): int(v) for k, v in unsupported.items()}}
