"""FLOP / parameter report: the fvcore count of the HCO, of whole models, and the official figures."""
from __future__ import annotations

import json

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

import vheat  # noqa: F401
from vheat.flops import count_flops, count_parameters, flop_analysis, hco_flops, main, model_report
from vheat.models import VHeat
from vheat_kernels import extension_available
from vheat_kernels.reference import hco_matmul_dct


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


class _OfficialHCO(torch.nn.Module):
    def forward(self, x, E):
        return hco_matmul_dct(x, E)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 9, 4), (3, 8, 8, 16), (1, 13, 2, 1)])
def test_hco_formula_equals_count_of_official_ops(shape):
    x, E = torch.randn(*shape), torch.rand(*shape[1:])
    B, H, W, C = shape
    assert hco_flops(shape) == 2 * B * H * W * C * (H + W) + B * H * W * C
    assert flop_analysis(_OfficialHCO(), (x, E)).total() == hco_flops(shape)
    # fvcore's own rules count the four cosine matmuls the same way; only the einsum differs.
    plain = FlopCountAnalysis(_OfficialHCO(), (x, E)).unsupported_ops_warnings(False)
    assert plain.by_operator()["conv"] == 2 * B * H * W * C * (H + W)


def _analytic_flops(model: VHeat, size, batch: int = 1) -> int:
    """fvcore's rules applied by hand: MACs of conv/linear, 5 per LayerNorm element, 1 per pooled element."""
    H, W = size
    conv = lambda cin, cout, k, h, w: batch * cin * cout * k * k * h * w  # noqa: E731
    ln = lambda *shape: 5 * batch * torch.Size(shape).numel()  # noqa: E731
    half = lambda n: (n - 1) // 2 + 1  # noqa: E731  (conv 3x3, stride 2, padding 1)
    c0 = model.dims[0]
    H, W = half(H), half(W)
    total = conv(3, c0 // 2, 3, H, W) + ln(c0 // 2, H, W)
    H, W = half(H), half(W)
    total += conv(c0 // 2, c0, 3, H, W) + ln(c0, H, W)
    for i, depth in enumerate(model.depths):
        C = model.dims[i]
        for _ in range(depth):
            hw = H * W
            total += ln(C, H, W) * 3  # norm1, out_norm, norm2
            total += batch * 9 * C * hw  # depthwise conv
            total += batch * hw * C * (2 * C + C + 8 * C)  # linear, out_linear, mlp fc1 + fc2
            total += hco_flops((batch, H, W, C))
            if not model.infer_mode:
                total += hw * C * C  # to_k on the (H, W, C) frequency embedding
        if i < len(model.depths) - 1:
            H, W = half(H), half(W)
            total += conv(C, model.dims[i + 1], 3, H, W) + ln(model.dims[i + 1], H, W)
    C = model.dims[-1]
    total += ln(C, H, W) + batch * C * H * W + batch * C * model.num_classes
    return total


@pytest.mark.parametrize("infer_mode", [False, True])
@pytest.mark.parametrize("post_norm, layer_scale", [(False, None), (True, 1e-5)])
def test_micro_model_count_follows_fvcore_rules(infer_mode, post_norm, layer_scale):
    model = VHeat(depths=(1, 2, 1, 1), dims=12, img_size=64, num_classes=10, post_norm=post_norm,
                  layer_scale=layer_scale, infer_mode=infer_mode)
    assert count_flops(model, 64, hco_backend="reference") == _analytic_flops(model, (64, 64))
    assert count_parameters(model) == sum(p.numel() for p in model.state_dict().values())


@pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")
def test_fused_op_count_equals_official_formulation():
    model = VHeat(depths=(1, 1, 2, 1), dims=8, img_size=64, num_classes=5).eval()
    assert count_flops(model, 64, hco_backend="cpu") == count_flops(model, 64, hco_backend="reference")
    assert count_flops(model, 96, batch=2, hco_backend="cpu") == _analytic_flops(model, (96, 96), batch=2)
    assert all(m.hco_backend is None for m in model.modules() if hasattr(m, "hco_backend"))  # restored


@pytest.mark.parametrize(  # ~3-6 s each on the 2-core machine
    "variant, figures",
    [
        ("vheat_tiny", (30.85, 4.94, 29.56, 4.59)),
        ("vheat_small", (52.22, 9.17, 50.05, 8.48)),
        ("vheat_base", (92.13, 16.16, 87.50, 14.93)),
    ],
)
def test_official_figures(variant, figures):
    r = model_report(variant, 224)
    assert (r["params_train_m"], r["gflops_train"], r["params_infer_m"], r["gflops_infer"]) == figures


def test_cli_json(capsys):
    main(["vheat_tiny", "--json", "--hco-backend", "reference"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == "vheat_tiny" and report["gflops_infer"] == 4.59
