"""vHeat models: official state_dict layout, golden logits, infer mode, resolutions, dtypes, layouts.

The oracle below is a float64 re-statement of the official vHeat forward (classification
model plus the detection wrapper's bicubic freq_embed resize) written from the official code
with plain torch ops and the official cosine / decay maps; it shares nothing with vheat or
vheat_kernels and is itself checked against the official logits.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune

import vheat  # noqa: F401  (registers the timm models)
from vheat.models import VHeat
from vheat_kernels import extension_available

from reference_data import REFERENCE


CPU_BACKENDS = [
    "reference",
    "fft",
    pytest.param("cpu", marks=pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")),
]
from model_helpers import MICRO, random_micro  # noqa: E402



# --- independent oracle -----------------------------------------------------------------------
def _official_cos_map(n: int) -> torch.Tensor:
    x = (torch.linspace(0, n - 1, n, dtype=torch.float64).view(1, -1) + 0.5) / n
    k = torch.linspace(0, n - 1, n, dtype=torch.float64).view(-1, 1)
    w = torch.cos(k * x * math.pi) * math.sqrt(2 / n)
    w[0, :] = w[0, :] / math.sqrt(2)
    return w


def _official_decay_map(h: int, w: int) -> torch.Tensor:
    n = torch.linspace(0, math.pi, h + 1, dtype=torch.float64)[:h].view(-1, 1)
    m = torch.linspace(0, math.pi, w + 1, dtype=torch.float64)[:w].view(1, -1)
    return torch.exp(-(n**2 + m**2))


def official_forward(sd: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """Official vHeat logits in float64 for any input size (freq_embed resized as the detection wrapper)."""
    p = {k: v.double() for k, v in sd.items()}
    depths, post_norm = cfg["depths"], cfg["post_norm"]

    def ln_cf(t, name, eps):  # LayerNorm over channels of NCHW
        return F.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],), p[name + ".weight"], p[name + ".bias"], eps).permute(0, 3, 1, 2)

    def heat2d(t, pre, freq):
        B, C, H, W = t.shape
        t = F.conv2d(t, p[pre + "dwconv.weight"], p[pre + "dwconv.bias"], padding=1, groups=C)
        t = F.linear(t.permute(0, 2, 3, 1), p[pre + "linear.weight"], p[pre + "linear.bias"])
        t, z = t.chunk(2, dim=-1)
        k = F.relu(F.linear(freq, p[pre + "to_k.0.weight"], p[pre + "to_k.0.bias"]))
        E = torch.pow(_official_decay_map(H, W)[:, :, None], k)
        cn, cm = _official_cos_map(H), _official_cos_map(W)
        t = torch.einsum("nh,mw,bhwc->bnmc", cn, cm, t) * E
        t = torch.einsum("nh,mw,bnmc->bhwc", cn, cm, t)
        t = F.layer_norm(t, (C,), p[pre + "out_norm.weight"], p[pre + "out_norm.bias"])
        t = F.linear(t * F.silu(z), p[pre + "out_linear.weight"], p[pre + "out_linear.bias"])
        return t.permute(0, 3, 1, 2)

    def mlp(t, pre):
        t = F.gelu(F.conv2d(t, p[pre + "fc1.weight"], p[pre + "fc1.bias"]))
        return F.conv2d(t, p[pre + "fc2.weight"], p[pre + "fc2.bias"])

    t = x.double()
    t = F.conv2d(t, p["patch_embed.conv1.weight"], p["patch_embed.conv1.bias"], stride=2, padding=1)
    t = F.gelu(ln_cf(t, "patch_embed.norm1.1", 1e-6))
    t = F.conv2d(t, p["patch_embed.conv2.weight"], p["patch_embed.conv2.bias"], stride=2, padding=1)
    t = ln_cf(t, "patch_embed.norm2.1", 1e-6)
    for i, depth in enumerate(depths):
        freq = p[f"freq_embed.{i}"]
        if tuple(freq.shape[:2]) != tuple(t.shape[2:]):
            freq = F.interpolate(freq.permute(2, 0, 1)[None], size=t.shape[2:], mode="bicubic")[0].permute(1, 2, 0)
        for d in range(depth):
            pre = f"layers.{i}.{d}."
            g1 = p.get(pre + "gamma1", torch.ones(1, dtype=torch.float64))[:, None, None]
            g2 = p.get(pre + "gamma2", torch.ones(1, dtype=torch.float64))[:, None, None]
            if post_norm:
                t = t + g1 * ln_cf(heat2d(t, pre + "op.", freq), pre + "norm1", 1e-5)
                t = t + g2 * ln_cf(mlp(t, pre + "mlp."), pre + "norm2", 1e-5)
            else:
                t = t + g1 * heat2d(ln_cf(t, pre + "norm1", 1e-5), pre + "op.", freq)
                t = t + g2 * mlp(ln_cf(t, pre + "norm2", 1e-5), pre + "mlp.")
        if i < len(depths) - 1:
            t = F.conv2d(t, p[f"layers.{i}.{depth}.0.weight"], stride=2, padding=1)
            t = ln_cf(t, f"layers.{i}.{depth}.1", 1e-5)
    t = ln_cf(t, "classifier.0", 1e-5).mean(dim=(2, 3))
    return F.linear(t, p["classifier.3.weight"], p["classifier.3.bias"])


# --- helpers ----------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def listing(name: str):
    rows = [line.rstrip("\n").split("\t") for line in open(REFERENCE / f"state_dict_{name}.tsv")][1:]
    return [(k, tuple(int(s) for s in shape.split("x")), dtype) for k, shape, dtype in rows]


def described(model):
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]


# --- state_dict layout and parameter counts ----------------------------------------------------
@pytest.mark.parametrize(
    "variant, params_train, params_infer",
    [("tiny", 30.85, 29.56), ("small", 52.22, 50.05), ("base", 92.13, 87.50)],
)
def test_state_dict_matches_official_listing(variant, params_train, params_infer):
    import timm

    with torch.device("meta"):  # layout and counts only: no memory, no init cost
        model = timm.create_model(f"vheat_{variant}")
        assert described(model) == listing(variant)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_train
        model.infer_init()
        assert described(model) == listing(f"{variant}_infer")
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params_infer


# --- golden logits ------------------------------------------------------------------------------
def test_oracle_reproduces_official_logits(golden):
    for case in golden.values():
        out = official_forward(case["state_dict"], case["config"], case["input"])
        assert (out - case["logits"].double()).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", ["micro_prenorm", "micro_postnorm_ls"])
def test_golden_logits(golden, case, backend):
    g = golden[case]
    model = VHeat(**g["config"], hco_backend=backend).eval()
    model.load_state_dict(g["state_dict"], strict=True)
    with torch.no_grad():
        train_mode_out = model(g["input"])
        model.infer_init()
        infer_mode_out = model(g["input"])
    assert (train_mode_out - g["logits"]).abs().max().item() <= 1e-5
    assert (infer_mode_out - g["logits"]).abs().max().item() <= 1e-5


# --- infer mode -----------------------------------------------------------------------------------
@pytest.mark.parametrize("post_norm, layer_scale", [(False, None), (True, 0.5)])
def test_infer_mode_is_a_one_way_fold_of_a_copy(post_norm, layer_scale):
    model = random_micro(post_norm, layer_scale, hco_backend="fft").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_native, x_other = torch.randn(2, 3, 64, 64), torch.randn(1, 3, 45, 83)
    with torch.no_grad():
        ref_native, ref_other = model(x_native), model(x_other)
        folded = copy.deepcopy(model).set_infer_mode(True)
        assert folded.infer_mode and "freq_embed.0" not in folded.state_dict()
        assert not any(p.requires_grad for n, p in folded.named_parameters() if n.endswith("k_exp"))
        torch.testing.assert_close(folded(x_native), ref_native, rtol=0, atol=2e-6)
        with pytest.raises(RuntimeError, match="folded k_exp is"):
            folded(x_other)  # the train weights that derive E at other sizes are gone
        with pytest.raises(RuntimeError, match="one-way"):
            folded.set_infer_mode(False)
        torch.testing.assert_close(model(x_other), ref_other, rtol=0, atol=0)  # the original is untouched
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_infer_mode_k_exp_is_official_fold():
    model = random_micro(hco_backend="reference")
    freq0 = model.freq_embed[0].detach().double()
    to_k = model.layers[0][0].op.to_k[0]
    k = F.relu(F.linear(freq0, to_k.weight.double(), to_k.bias.double()))
    expected = torch.pow(_official_decay_map(16, 16)[:, :, None], k)
    model.infer_init()
    torch.testing.assert_close(model.layers[0][0].op.k_exp.double(), expected, rtol=1e-5, atol=1e-6)


# --- resolutions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (96, 96), (50, 77), (33, 97), (1, 40), (130, 20)])
@pytest.mark.parametrize("post_norm", [False, True])
def test_any_resolution_matches_official_oracle(size, post_norm):
    model = random_micro(post_norm, 0.5 if post_norm else None, hco_backend="fft").eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = model(x)
    expected = official_forward(model.state_dict(), dict(depths=MICRO["depths"], post_norm=post_norm), x)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)


def test_resolution_change_is_differentiable_in_train_mode():
    model = random_micro(hco_backend="fft").train()
    model(torch.randn(2, 3, 50, 70)).square().sum().backward()
    for p in model.freq_embed:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_eval_output_follows_weight_changes():
    """E is derived on every call in train mode: in-place updates and loads show at once."""
    model = random_micro(hco_backend="fft").eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        first = model(x)
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)
        model.freq_embed[1].mul_(-1.5)  # optimizer-style in-place update
        changed = model(x)
        model.layers[2][1].op.to_k[0].weight.add_(0.3)
        changed2 = model(x)
    fresh = random_micro(seed=5, hco_backend="fft").eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (changed - first).abs().max() > 1e-4
        torch.testing.assert_close(changed2, fresh(x), rtol=0, atol=1e-6)
        model.load_state_dict(random_micro(seed=9).state_dict())  # load_state_dict invalidates too
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=1e-6)


def _scale_freq_embed_data(model):
    for p in model.freq_embed:
        p.data.mul_(50)


def _prune_to_k(model, amount=0.9):
    for stage in model.layers:
        for block in stage.blocks:
            prune.l1_unstructured(block.op.to_k[0], "weight", amount=amount)


def _prune_to_k_twice(model):
    _prune_to_k(model, 0.3)
    model(torch.randn(1, 3, 64, 64))  # run with the first mask; the second only swaps the mask buffer
    _prune_to_k(model, 0.9)


def _assign_other_weights(model):
    model.load_state_dict(random_micro(seed=7, hco_backend="fft").state_dict(), assign=True)


def _assign_one_stage(model):
    other = random_micro(seed=8, hco_backend="fft")
    model.layers[2].load_state_dict(other.layers[2].state_dict(), assign=True)


def _replace_to_k_data(model):
    weight = model.layers[1][0].op.to_k[0].weight
    weight.data = torch.randn_like(weight)


@pytest.mark.parametrize("change", [_scale_freq_embed_data, _prune_to_k, _prune_to_k_twice, _assign_other_weights, _assign_one_stage,
                                    _replace_to_k_data])
def test_eval_logits_follow_weight_changes_made_any_way(change):
    """However the weights change (``.data`` writes and pruning bypass the version counters,
    ``assign`` swaps tensors), the next eval forward uses them: the official oracle on the
    weights in effect agrees."""
    model = random_micro(hco_backend="fft").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        change(model)
        after = model(x)
    effective = copy.deepcopy(model)
    for module in effective.modules():
        if hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    expected = official_forward(effective.state_dict(), dict(depths=MICRO["depths"], post_norm=True), x)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after.double(), expected, rtol=0, atol=2e-5 * max(1.0, expected.abs().max().item()))


# --- dtypes, layouts, autocast, checkpointing, compile ------------------------------------------
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype, atol", [(torch.bfloat16, 0.15), (torch.float16, 0.02), (torch.float64, 1e-5)])
def test_low_and_high_precision_models(backend, dtype, atol):
    model = random_micro(hco_backend=backend).eval()
    x = torch.randn(2, 3, 48, 72)
    expected = official_forward(model.state_dict(), dict(depths=MICRO["depths"], post_norm=True), x)
    model = model.to(dtype)
    with torch.no_grad():
        out = model(x.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=atol * expected.abs().max().item())
        x_native = torch.randn(2, 3, 64, 64)  # a folded model runs at its training resolution
        expected = official_forward(model.double().state_dict(), dict(depths=MICRO["depths"], post_norm=True), x_native)
        model.to(dtype).infer_init()
        assert model.layers[0][0].op.k_exp.dtype == dtype
        out = model(x_native.to(dtype)).double()
        torch.testing.assert_close(out, expected, rtol=0, atol=atol * expected.abs().max().item())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_autocast_bfloat16_forward_backward(backend):
    model = random_micro(hco_backend=backend).train()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=0.15 * expected.abs().max().item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_channels_last_layout_is_kept_without_copies():
    model = random_micro(hco_backend="fft").eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        ref = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
        cl_model = random_micro(hco_backend="fft").eval().to(memory_format=torch.channels_last)
        out = cl_model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for f in feats:  # stage features stay channels-last in memory: the NHWC blocks permute views only
        assert f.is_contiguous(memory_format=torch.channels_last)


def test_gradient_checkpointing_gives_same_gradients():
    x = torch.randn(2, 3, 40, 52)
    grads = []
    for use_ckpt in (False, True):
        model = random_micro(hco_backend="fft", use_checkpoint=use_ckpt).train()
        model(x).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_heat2d_gradcheck_float64(backend):
    from vheat.models import Heat2D

    torch.manual_seed(0)
    op = Heat2D(3, res=5, hco_backend=backend).double()
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)  # H != W, odd sizes
    freq = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, f: op(a, f), (x, freq), fast_mode=True)


_COPY_OPS = ("aten::clone", "aten::contiguous", "aten::copy_")


def _feature_map_copies(module, shape, monkeypatch=None, copy_hco_input=False):
    """Copy ops (clone / contiguous / copy_) on a tensor of the HCO input's shape in a CPU
    profiler trace of one forward and backward of ``module``; with copy_hco_input, the HCO
    is called on ``x.contiguous()`` as the model did before it read the chunk view in place."""
    from torch.profiler import ProfilerActivity, profile

    from vheat.models import tracing

    if copy_hco_input:
        hco = tracing.hco
        monkeypatch.setattr(tracing, "hco", lambda x, E, b=None: hco(x.contiguous(), E, b))
    B, H, W, C = shape
    x = torch.randn(shape, requires_grad=True)
    freq = torch.randn(H, W, C)
    dy = torch.randn(shape)  # not .sum(): an expanded gradient makes LayerNorm's backward copy it
    module(x, freq).backward(dy)  # warm-up: table and attenuation caches
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        module(x, freq).backward(dy)
    return [e.name for e in prof.events() if e.name in _COPY_OPS and list(e.input_shapes[0]) == list(shape)]


# The HCO reads the chunk of the linear output in place (strides (H W 2C, W 2C, 2C, 1)): no
# full copy of the feature map per block. Sizes: a small plane with a partial channel block
# (7 x 7, 40 channels) and a general one (H != W); distinct B, H, W, C so that no other tensor
# of the block has the HCO input's shape.
@pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")
@pytest.mark.parametrize("block", ["Heat2D", "HeatBlock"])
@pytest.mark.parametrize("shape", [(3, 7, 7, 40), (3, 10, 12, 40)], ids=str)
@pytest.mark.parametrize("backend", [None, "cpu"])
def test_hco_input_is_not_copied(block, shape, backend, monkeypatch):
    from vheat.models import heat

    torch.manual_seed(0)
    cls = getattr(heat, block)
    module = cls(shape[3], shape[1], hco_backend=backend)
    assert _feature_map_copies(module, shape) == []
    # The same trace with the old explicit copy shows it: the count above can fail.
    old = _feature_map_copies(module, shape, monkeypatch, copy_hco_input=True)
    assert old.count("aten::contiguous") == 1 and old.count("aten::copy_") == 1, old


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, compiler",
    # Inductor's C++ codegen takes minutes per graph on the 2-core machine: one backend there.
    [
        ("reference", "aot_eager"),
        ("fft", "aot_eager"),
        pytest.param("cpu", "aot_eager", marks=CPU_BACKENDS[-1].marks),
        ("fft", "inductor"),
    ],
)
def test_torch_compile_matches_eager(backend, compiler):
    torch.manual_seed(0)
    model = VHeat(depths=(1, 1, 1, 1), dims=8, img_size=64, num_classes=10, hco_backend=backend).eval()
    compiled = torch.compile(model, backend=compiler, fullgraph=compiler != "inductor")  # no graph breaks
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-5)
    model.train()
    compiled(torch.randn(2, 3, 64, 64)).square().sum().backward()
    assert model.freq_embed[0].grad is not None and model.freq_embed[0].grad.abs().sum() > 0


def test_constructor_errors():
    with pytest.raises(ValueError, match="same length"):
        VHeat(depths=(1, 1), dims=[8, 16, 32])
    with pytest.raises(ValueError, match="square"):
        VHeat(depths=(1, 1, 1, 1), dims=8, img_size=(64, 96))
    model = random_micro(hco_backend="no-such-backend")
    with pytest.raises(ValueError, match="unknown backend"):
        model(torch.randn(1, 3, 64, 64))


def test_folded_model_follows_dtype_moves():
    model = random_micro(hco_backend="fft")
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = official_forward(model.state_dict(), dict(depths=MICRO["depths"], post_norm=True), x)
        model = model.infer_init().to(torch.float64)
        assert {p.dtype for p in model.parameters()} == {torch.float64}
        torch.testing.assert_close(model.eval()(x), expected, rtol=0, atol=1e-6)


def test_heat2d_input_errors():
    from vheat.models import Heat2D

    op = Heat2D(4, res=6)
    x = torch.randn(1, 6, 6, 4)
    with pytest.raises(ValueError, match=r"freq embedding of shape \(6, 6, 4\)"):
        op(x)
    with pytest.raises(ValueError, match="does not match"):
        op(x, torch.randn(5, 6, 4))
