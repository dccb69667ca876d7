"""Parameter and FLOP report of vHeat models (train and infer mode), counted with fvcore.

fvcore counts a multiply-add as one flop and ignores elementwise ops, exactly as the
official vHeat figures were made. The HCO is counted as the official matmul-DCT does it:
four cosine matmuls (B*H*W*C*(H+W) MACs per pair) plus the ``einsum`` that scales the
spectrum by E, one multiply per element (B*H*W*C). All six official figures come out
with that count; fvcore's own einsum rule sizes it with numpy's ``einsum_path``, which
in this environment (numpy 2) reports B*H*W*C + 1 "flops", halved by fvcore to
B*H*W*C / 2, and would give vHeat-B 14.92 instead of 14.93 infer GFLOPs. So
the report counts that einsum itself, and gives the fused op ``vheat::hco_forward`` the
same total: the figures do not depend on the numpy version or the HCO backend.

    python -m vheat.flops [--img-size 224] [vheat_tiny vheat_small ...]
"""
from __future__ import annotations

import argparse
import json
import logging
from math import prod
from numbers import Number
from typing import Any, Dict, List, Optional, Sequence

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import einsum_flop_jit, get_shape
from torch import nn

# hco_forward_spectrum is the CPU training-mode form (also returns DCT2(x)): same arithmetic.
HCO_OPS = ("vheat::hco_forward", "vheat::hco_forward_spectrum")
# The spectrum scaling of the official HCO (and of the 'reference' backend), letters normalised.
_SCALING_EINSUM = "abcd,bcd->abcd"


def hco_flops(shape: Sequence[int]) -> int:
    """Flops of the official HCO on x of shape (B, H, W, C), counted as the official figures."""
    B, H, W, C = (int(s) for s in shape)
    dct_macs = 2 * B * H * W * C * (H + W)  # forward and inverse DCT along H and W
    return dct_macs + B * H * W * C  # spectrum * E: one multiply per element


def _hco_handle(inputs: List[Any], outputs: List[Any]) -> int:
    return hco_flops(get_shape(inputs[0]))


def _einsum_handle(inputs: List[Any], outputs: List[Any]) -> Number:
    equation = inputs[0].toIValue().replace(" ", "")
    letters = dict.fromkeys(c for c in equation if c.isalpha())
    normalised = equation.translate({ord(c): 97 + i for i, c in enumerate(letters)})
    if normalised == _SCALING_EINSUM:
        return prod(get_shape(outputs[0]))
    return einsum_flop_jit(inputs, outputs)


def count_parameters(model: nn.Module) -> int:
    """All parameters, frozen ones included (the official figures count infer mode's k_exp)."""
    return sum(p.numel() for p in model.parameters())


def flop_analysis(model: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """fvcore analysis with the HCO rules above registered and its warnings silenced."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**{op: _hco_handle for op in HCO_OPS}, **{"aten::einsum": _einsum_handle})
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    return analysis


# Operator kinds (fvcore's names) of the dense layers: the convolutions and linear layers.
DENSE_OPS = ("conv", "linear", "addmm", "matmul", "bmm")


def count_flops(model: nn.Module, img_size: int = 224, batch: int = 1, hco_backend: Optional[str] = None) -> int:
    """fvcore flop count of one forward pass at ``img_size`` (model restored afterwards).

    ``hco_backend`` None: the fused 'cpu' op when the extension is built, else 'reference'.
    """
    return sum(count_flops_by_operator(model, img_size, batch, hco_backend).values())


def count_flops_by_operator(model: nn.Module, img_size: int = 224, batch: int = 1,
                            hco_backend: Optional[str] = None) -> Dict[str, int]:
    """count_flops split by operator kind ('conv', 'linear', 'hco_forward', 'layer_norm', ...)."""
    from vheat_kernels import extension_available

    backend = hco_backend or ("cpu" if extension_available() else "reference")
    heat_ops = [m for m in model.modules() if hasattr(m, "hco_backend")]
    saved = [m.hco_backend for m in heat_ops]
    was_training = model.training
    try:
        for m in heat_ops:
            m.hco_backend = backend
        model.eval()
        p = next(model.parameters())
        x = torch.zeros(batch, 3, img_size, img_size, device=p.device, dtype=p.dtype)
        return {op: int(n) for op, n in flop_analysis(model, (x,)).by_operator().items()}
    finally:
        for m, b in zip(heat_ops, saved):
            m.hco_backend = b
        model.train(was_training)


def model_figures(model: nn.Module, img_size: int = 224, hco_backend: Optional[str] = None) -> Dict[str, Any]:
    """Parameters (infer mode's folded ``k_exp`` included: it is a frozen Parameter) and fvcore flops."""
    k_exp = sum(p.numel() for name, p in model.named_parameters() if name.endswith("k_exp"))
    params, flops = count_parameters(model), count_flops(model, img_size, hco_backend=hco_backend)
    return {"params": params, "params_m": round(params / 1e6, 2), "k_exp_params": k_exp,
            "flops": flops, "gflops": round(flops / 1e9, 2)}


def model_report(variant: str, img_size: int = 224, hco_backend: Optional[str] = None) -> Dict[str, Any]:
    """{'params_train', 'gflops_train', 'params_infer', 'gflops_infer', ...} for a registered variant."""
    import timm

    import vheat  # noqa: F401  (registers the variants)

    report: Dict[str, Any] = {"model": variant, "img_size": img_size}
    for mode in ("train", "infer"):
        # Train mode: the released model (224 px grids) run at img_size; infer mode: the model
        # folded for img_size (a folded model runs at its folding resolution only).
        model = timm.create_model(variant) if mode == "train" else timm.create_model(variant, img_size=img_size).infer_init()
        r = model_figures(model, img_size, hco_backend)
        report.update({f"params_{mode}": r["params"], f"flops_{mode}": r["flops"], f"k_exp_params_{mode}":
                       r["k_exp_params"], f"params_{mode}_m": r["params_m"], f"gflops_{mode}": r["gflops"]})
    return report


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["vheat_tiny", "vheat_small", "vheat_base"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--hco-backend", default=None, help="backend traced for the count (default: cpu if built)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model")
    args = parser.parse_args(argv)
    for variant in args.variants:
        r = model_report(variant, args.img_size, args.hco_backend)
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"{variant:12s} {args.img_size}px  train: {r['params_train_m']:6.2f}M params {r['gflops_train']:6.2f} GFLOPs"
                f"  infer: {r['params_infer_m']:6.2f}M params {r['gflops_infer']:6.2f} GFLOPs"
            )


if __name__ == "__main__":
    main()
