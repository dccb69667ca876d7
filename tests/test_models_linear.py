"""vheat.models.linear: oneDNN GEMMs (fused bias + GELU in inference, an autograd Function in training)
where this machine measures them faster, F.linear elsewhere."""
import os

import pytest
import torch
import torch.nn.functional as F

from vheat.models import VHeat
from vheat.models.linear import OneDNNLinearFunction, library, linear

needs_onednn = pytest.mark.skipif(not library.onednn_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 7, 5, 96), (3, 13, 33), (49, 192), (2, 1, 1, 16)])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_fused_matches_linear_and_exact_gelu(shape, activation, monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")  # these sizes are below the size rule
    x = torch.randn(shape)
    w, b = torch.randn(3 * shape[-1] + 1, shape[-1]), torch.randn(3 * shape[-1] + 1)
    act = F.gelu if activation == "gelu" else (lambda t: t)
    pre = F.linear(x.double(), w.double())
    tol = dict(rtol=1e-4, atol=1e-4 * shape[-1] ** 0.5)
    with torch.no_grad():
        assert library.uses_onednn(x, w, b, activation)
        got = linear(x, w, b, activation)
        got_no_bias = linear(x, w, None, activation)
    assert got.shape == pre.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), act(pre + b.double()), **tol)
    torch.testing.assert_close(got_no_bias.double(), act(pre), **tol)


def _with_calibration(monkeypatch, everywhere: bool) -> None:
    """Pin the measured MKL-vs-oneDNN choice, so the rule under test does not depend on this CPU."""
    monkeypatch.setattr(library, "calibration", lambda: {"onednn_everywhere": everywhere})


def test_plain_path_where_onednn_does_not_apply(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    x, w, b = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6)
    with torch.no_grad():
        assert not library.uses_onednn(x.double(), w.double(), b.double())  # float32 only
        assert not library.uses_onednn(x.t().contiguous().t(), w, b)  # non-contiguous input
        assert not library.uses_onednn(x[:0], w, b)  # empty
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bf16 GEMM, not an fp32 oneDNN one
            assert not library.uses_onednn(x, w, b)
            assert linear(x, w, b).dtype == torch.bfloat16
        monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "0")
        assert not library.uses_onednn(x, w, b)
    with pytest.raises(ValueError, match="activation must be one of"):
        linear(x, w, b, "relu")
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "yes")
    with pytest.raises(ValueError, match="VHEAT_ONEDNN_LINEAR must be 0, rule, auto"):
        linear(x, w, b)


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "gelu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_training_path_matches_autograd_of_linear(activation, with_bias, monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 96, requires_grad=True)
    w = torch.randn(193, 96, requires_grad=True)
    b = torch.randn(193, requires_grad=True) if with_bias else None
    assert library.uses_onednn(x, w, b, activation)
    calls = []
    forward = OneDNNLinearFunction.forward
    monkeypatch.setattr(OneDNNLinearFunction, "forward", staticmethod(lambda ctx, *a: calls.append(1) or forward(ctx, *a)))
    y = linear(x, w, b, activation)
    assert calls == [1]
    dy = torch.randn_like(y)
    inputs = (x, w) + ((b,) if with_bias else ())
    got = torch.autograd.grad(y, inputs, dy)
    xd, wd, bd = (t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b))
    ref_y = F.linear(xd, wd, bd)
    ref_y = F.gelu(ref_y) if activation == "gelu" else ref_y
    ref = torch.autograd.grad(ref_y, (xd, wd) + ((bd,) if with_bias else ()), dy.double())
    tol = dict(rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(y.double(), ref_y, **tol)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.double(), r, **tol)


@needs_onednn
def test_training_path_double_backward(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    torch.manual_seed(0)
    x, w, b = (torch.randn(*s, requires_grad=True) for s in ((9, 16), (12, 16), (12,)))

    def grad_norm_grad(fn):
        gx, = torch.autograd.grad(fn(x, w, b).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), (w, b), allow_unused=True)
    got = grad_norm_grad(lambda *a: linear(*a, "gelu"))
    ref = grad_norm_grad(lambda *a: F.gelu(F.linear(*a)))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_auto_follows_the_measured_choice(monkeypatch):
    monkeypatch.delenv("VHEAT_ONEDNN_LINEAR", raising=False)
    x, w = torch.randn(49, 768, requires_grad=True), torch.randn(768, 768)
    _with_calibration(monkeypatch, everywhere=True)
    assert library.uses_onednn(x, w, None)  # training and small layers too
    _with_calibration(monkeypatch, everywhere=False)
    assert not library.uses_onednn(x, w, None)
    monkeypatch.undo()
    c = library.calibration()  # the real measurement: cached per thread count
    assert c is library.calibration() and c["threads"] == torch.get_num_threads()
    assert c["mkl_ms"] > 0 and c["onednn_ms"] > 0 and c["onednn_everywhere"] == (c["speedup"] >= library.ONEDNN_MARGIN)


@needs_onednn
def test_size_rule(monkeypatch):
    monkeypatch.delenv("VHEAT_ONEDNN_LINEAR", raising=False)
    _with_calibration(monkeypatch, everywhere=False)  # a machine where MKL is as fast as oneDNN
    small, stage1 = torch.randn(49, 768), torch.randn(3136, 96)
    with torch.no_grad():
        assert not library.uses_onednn(small, torch.randn(768, 768), None)
        assert library.uses_onednn(small, torch.randn(3072, 768), None, "gelu")
        assert not library.uses_onednn(stage1, torch.randn(384, 96), None, "none")
        assert library.uses_onednn(torch.randn(1 << 15, 8), torch.randn(128, 8), None)  # 4M outputs
    assert library.worth_fusing(50176, 384, 96, "none") and not library.worth_fusing(784, 768, 768, "none")


@needs_onednn
def test_model_inference_same_with_and_without_fusion(monkeypatch):
    torch.manual_seed(0)
    model = VHeat(depths=(1, 1, 2, 1), dims=16, img_size=64, num_classes=5, drop_path_rate=0.0).eval()
    x = torch.randn(2, 3, 64, 64)
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "0")
        plain = model(x)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_replaced_or_hooked_linear_runs_its_own_forward(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    model = VHeat(depths=(1, 1, 1, 1), dims=16, img_size=64, num_classes=5, drop_path_rate=0.0).eval()
    op = model.layers[0].blocks[0].op
    seen = []
    op.linear.register_forward_hook(lambda m, i, o: seen.append("linear"))

    class Scaled(torch.nn.Linear):  # a stand-in for a LoRA / quantized replacement
        def forward(self, x):
            seen.append("out_linear")
            return 2 * super().forward(x)

    scaled = Scaled(16, 16)
    scaled.load_state_dict(op.out_linear.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        op.out_linear = scaled
        after = model(x)
    assert seen == ["linear", "linear", "out_linear"]
    assert not torch.allclose(before, after)


@needs_onednn
def test_describe_names_the_choice(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "0")
    assert "off" in library.describe()
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "always")
    assert "oneDNN everywhere" in library.describe()
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "auto")
    monkeypatch.setattr(library, "calibration", lambda: {"onednn_everywhere": False, "speedup": 0.95, "threads": 1})
    assert library.describe() == ("linear layers: F.linear, oneDNN for GELU / large outputs in inference "
                                       "(MKL / oneDNN measured 0.95x at 1 thread(s))")


def test_pinned_library_overrides_the_calibration(monkeypatch):
    monkeypatch.delenv("VHEAT_ONEDNN_LINEAR", raising=False)
    x, w = torch.randn(49, 768, requires_grad=True), torch.randn(768, 768)
    library.pin_training_library("mkl")
    assert library.training_library() == "mkl" and not library.uses_onednn(x, w, None)
    with torch.no_grad():  # the size rule still fuses the GELU layer in inference
        assert library.uses_onednn(x, torch.randn(3072, 768), None, "gelu") == library.onednn_available()
    library.pin_training_library("onednn")
    assert library.uses_onednn(x, w, None) == library.onednn_available()
    with pytest.raises(ValueError, match="'onednn' or 'mkl'"):
        library.pin_training_library("blas")


def test_pinning_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "0")
    library.pin_training_library("onednn")
    assert os.environ["VHEAT_ONEDNN_LINEAR"] == "0"
    assert library.training_library() == ("onednn" if library.onednn_available() else "mkl")
    library.pin_training_library(None)
    assert library.training_library() == "mkl"


@pytest.mark.parametrize("mode", ["0", "rule", "always"])
def test_fx_graph_runs_the_eager_gemms(mode, monkeypatch):
    """timm's test_model_forward_fx asks for bitwise equality: the graph must call the same GEMMs."""
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", mode)
    model = VHeat(depths=(1, 1, 2, 1), dims=32, img_size=64, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        eager = model(x)
        graph = torch.fx.symbolic_trace(model)(x)
    assert torch.equal(graph, eager)


def test_mode_setting_wins_over_the_environment_and_never_writes_it(monkeypatch):
    monkeypatch.setenv("VHEAT_ONEDNN_LINEAR", "0")
    library.set_mode("always")
    assert library.mode() == "always" and os.environ["VHEAT_ONEDNN_LINEAR"] == "0"
    library.set_mode(None)
    assert library.mode() == "0"
    with pytest.raises(ValueError, match="set_mode must be 0, rule, auto"):
        library.set_mode("fast")
