"""The conventions timm (tests/test_models.py), Hugging Face and deployment tools hold a model to.

global_pool and heads, safetensors / save_for_hf, FX (symbolic_trace, create_feature_extractor),
ONNX (both torch.onnx exporters, run in onnxruntime), pretrained loading through timm's
standard path (checkpoint_filter_fn, file= / local-dir:, in_chans, num_classes),
torch.jit.trace / torch.jit.script, torch.export. vheat_tiny where it is cheap, a micro
config of the same architecture elsewhere.
"""
from __future__ import annotations

import io
import json

import pytest
import timm
import torch
from timm.models import load_checkpoint

import vheat  # noqa: F401  (registers the timm models)
from reference_data import GOLDEN
from vheat.checkpoint_io import CheckpointFormatError
from vheat.models import VHeat, checkpoint_filter_fn
from vheat.models import tracing
from vheat_kernels import extension_available

from model_helpers import MICRO  # noqa: E402

MICRO = dict(MICRO, dims=8)
POOLS = ["avg", "max", "avgmax", "catavgmax"]
needs_ops = pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _random(model: VHeat, seed: int = 0) -> VHeat:
    """Weights large enough that every part (E, freq_embed, head) changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _micro(seed: int = 0, **kw) -> VHeat:
    return _random(timm.create_model("vheat_tiny", **dict(MICRO, **kw)), seed).eval()


def _same_weights(a: VHeat, b: VHeat, skip=()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return timm.create_model("vheat_tiny").eval()


# --- heads and global_pool ---------------------------------------------------------------------
def test_timm_default_cfg_checks(tiny):
    """timm's test_model_default_cfgs on vheat_tiny: pool_size, reset_classifier(0) and (0, '')."""
    model = timm.create_model("vheat_tiny").eval()
    cfg, x = model.pretrained_cfg, torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == cfg["pool_size"]
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        out = model(x)
    assert out.shape == (1, model.num_features, *cfg["pool_size"])
    assert model.global_pool.pool_type == "" and model.global_pool.is_identity()
    assert cfg["classifier"] + ".weight" in tiny.state_dict() and cfg["first_conv"] + ".weight" in tiny.state_dict()
    assert timm.models.get_pretrained_cfg_value("vheat_tiny", "classifier") == "classifier.3"


@pytest.mark.parametrize("pool", POOLS)
def test_global_pool_values_and_official_keys(pool):
    model = _micro(global_pool=pool, num_classes=5)
    reference = _micro(num_classes=5)  # official head: avg
    assert model.global_pool.pool_type == pool
    mult = 2 if pool == "catavgmax" else 1
    assert model.head_hidden_size == model.num_features * mult
    assert list(model.state_dict()) == list(reference.state_dict())  # keys unchanged (classifier.0 / .3)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        normed = model.classifier[0](model.forward_features(x))
        avg, mx = normed.mean((2, 3)), normed.amax((2, 3))
        want = {"avg": avg, "max": mx, "avgmax": 0.5 * (avg + mx), "catavgmax": torch.cat([avg, mx], 1)}[pool]
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pre, want, rtol=1e-6, atol=1e-6)
        assert model(x).shape == (2, 5)


def test_reset_classifier_switches_pool_and_keeps_device_dtype():
    model = _micro(num_classes=5).double()
    model.reset_classifier(7, "catavgmax")
    assert model.get_classifier().in_features == 2 * model.num_features and model.get_classifier().weight.dtype == torch.float64
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 7)
    model.reset_classifier(3)  # pool kept
    assert model.global_pool.pool_type == "catavgmax" and model.get_classifier().in_features == 2 * model.num_features
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dim() == 4


def test_global_pool_errors():
    with pytest.raises(ValueError, match="global_pool must be one of"):
        timm.create_model("vheat_tiny", **MICRO, global_pool="fastavg")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        timm.create_model("vheat_tiny", **MICRO, global_pool="")
    model = timm.create_model("vheat_tiny", **MICRO, global_pool="", num_classes=0)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(10, "")


def test_new_classifier_on_an_unpooled_model_pools_again():
    """timm's test_model_default_cfgs calls reset_classifier(2) on a model built with global_pool=''."""
    model = timm.create_model("vheat_tiny", **MICRO, global_pool="", num_classes=0).eval()
    model.reset_classifier(2)
    assert model.global_pool.pool_type == "avg" and not model.classifier.training
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_models_register_from_the_architecture_module():
    assert set(timm.list_models(module="vheat")) == {"vheat_tiny", "vheat_small", "vheat_base"}


# --- safetensors and save_for_hf -------------------------------------------------------------------
def test_safetensors_roundtrip(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = tiny.state_dict()
    assert all(v.is_contiguous() for v in sd.values())
    assert tiny.patch_embed.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # fast layout kept
    save_file(sd, tmp_path / "m.safetensors")
    fresh = timm.create_model("vheat_tiny")
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    assert _same_weights(fresh, tiny)
    assert fresh.layers[2][0].op.dwconv.weight.is_contiguous(memory_format=torch.channels_last)


def test_save_for_hf_then_local_dir_pretrained(tmp_path):
    from timm.models import save_for_hf

    source = _micro(seed=3, num_classes=6)
    save_for_hf(source, tmp_path, model_config=dict(num_classes=6, **MICRO), safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "vheat_tiny"
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert _same_weights(loaded, source) and loaded.num_classes == 6
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


# --- FX ------------------------------------------------------------------------------------------
def test_fx_symbolic_trace_whole_model(tiny):
    gm = torch.fx.symbolic_trace(tiny)
    leaves = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is tracing.hco]
    assert len(leaves) == sum(tiny.depths)  # one HCO leaf per block
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), tiny(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("infer_mode", [False, True])
def test_fx_graph_runs_at_other_sizes(infer_mode):
    model = _micro(seed=1)
    if infer_mode:
        model.set_infer_mode(True)
    gm = torch.fx.symbolic_trace(model)
    sizes = [(64, 64)] if infer_mode else [(64, 64), (45, 83)]  # freq_embed resized at run time
    for size in sizes:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)
    if infer_mode:  # folded k_exp: another size is rejected when the graph runs
        with pytest.raises(RuntimeError, match="folded k_exp is"):
            gm(torch.randn(1, 3, 96, 96))


def _assert_same_gradients(model: VHeat, converted) -> None:
    """Gradients through ``converted`` (an FX / TorchScript form of ``model``) equal eager ones.

    The graphs record F.linear (MKL); eager is pinned to it too, since where oneDNN is the
    faster library here (vheat.models.linear's calibration) eager training would round differently."""
    x = torch.randn(2, 3, 64, 64)
    converted(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VHEAT_ONEDNN_LINEAR", "0")
        model(x).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_fx_train_mode_backward_matches_eager():
    model = _micro(seed=2, drop_path_rate=0.0).train()
    _assert_same_gradients(model, torch.fx.symbolic_trace(model))


def test_timm_fx_feature_extractor():
    from timm.models import create_feature_extractor, get_graph_node_names

    model = _micro(seed=4)
    _, eval_nodes = get_graph_node_names(model)
    assert "layers.0.0.op.hco" in eval_nodes
    extractor = create_feature_extractor(model, {"layers.2.1.op.hco": "hco", "classifier.0": "normed"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        assert out["normed"].shape == (1, 64, 2, 2)
        torch.testing.assert_close(out["normed"], model.classifier[0](model.forward_features(x)), rtol=1e-5, atol=1e-6)
    assert out["hco"].shape == (1, 4, 4, 32)  # (B, H, W, C) at stride 16


# --- ONNX ----------------------------------------------------------------------------------------
def _onnx_run(model: torch.nn.Module, example: torch.Tensor, run_input: torch.Tensor, dynamo: bool):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript" if dynamo else "onnx")
    if dynamo:
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
        proto = program.model_proto
        data = proto.SerializeToString()
    else:
        import onnx

        buf = io.BytesIO()
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        data = buf.getvalue()
        proto = onnx.load_from_string(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: run_input.numpy()})[0]
    return torch.from_numpy(out), [n.op_type for n in proto.graph.node]


class _HCOModule(torch.nn.Module):
    def __init__(self, h: int, w: int, c: int):
        super().__init__()
        self.E = torch.nn.Parameter(torch.rand(h, w, c))

    def forward(self, x):
        return tracing.hco(x, self.E, None) * 2.0


@needs_ops
@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_lowering_of_the_op_is_four_matmuls(dynamo):
    module = _HCOModule(7, 5, 6)
    out, ops = _onnx_run(module, torch.randn(2, 7, 5, 6), x := torch.randn(3, 7, 5, 6), dynamo)
    assert ops.count("MatMul") == 4 and "Mul" in ops and not any(o.startswith("vheat") for o in ops)
    with torch.no_grad():
        assert (out - module(x)).abs().max().item() <= 1e-5


@needs_ops
def test_onnx_dynamo_vheat_tiny_matches_pytorch(tiny):
    x = torch.randn(3, 3, 224, 224)
    out, ops = _onnx_run(tiny, torch.randn(2, 3, 224, 224), x, dynamo=True)
    assert ops.count("MatMul") >= 4 * sum(tiny.depths)
    with torch.no_grad():
        assert (out - tiny(x)).abs().max().item() <= 1e-4  # fp32, batch 3 on a graph exported at batch 2


@needs_ops
@pytest.mark.parametrize("infer_mode", [False, True])
def test_onnx_torchscript_exporter_micro_matches_pytorch(infer_mode):
    model = _micro(seed=5, post_norm=True, layer_scale=0.5)
    if infer_mode:
        model.set_infer_mode(True)
    x = torch.randn(3, 3, 64, 64)
    out, _ = _onnx_run(model, torch.randn(2, 3, 64, 64), x, dynamo=False)
    with torch.no_grad():
        assert (out - model(x)).abs().max().item() <= 1e-4


# --- pretrained weights through timm's path --------------------------------------------------------
def _official_file(tmp_path, model: VHeat, name: str = "ckpt.pth", ema_offset: float = 0.5):
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / name
    torch.save({"model": sd, "model_ema": {k: v + ema_offset for k, v in sd.items()}, "epoch": 7}, path)
    return path


def test_checkpoint_filter_fn_maps_official_checkpoints():
    source = _micro(seed=6)
    raw = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "model_ema": {}}
    target = timm.create_model("vheat_tiny", **MICRO)
    target.load_state_dict(checkpoint_filter_fn(raw, target), strict=True)  # 'model' entry, prefix stripped
    assert _same_weights(target, source)

    bigger = timm.create_model("vheat_tiny", **dict(MICRO, img_size=96))  # freq_embed of another resolution
    sd = checkpoint_filter_fn(source.state_dict(), bigger)
    assert sd["freq_embed.0"].shape == (24, 24, 8)
    bigger.load_state_dict(sd, strict=True)


def test_checkpoint_filter_fn_maps_train_and_infer_layouts():
    source = _micro(seed=7)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = source(x)
    # train layout -> infer-mode model: folded into k_exp by the filter
    folded_model = timm.create_model("vheat_tiny", **MICRO, infer_mode=True).eval()
    folded_model.load_state_dict(checkpoint_filter_fn(source.state_dict(), folded_model), strict=True)
    # infer layout (k_exp) -> infer-mode model: as it is
    infer_sd = _micro(seed=7).set_infer_mode(True).state_dict()
    infer_model = timm.create_model("vheat_tiny", **MICRO, infer_mode=True).eval()
    infer_model.load_state_dict(checkpoint_filter_fn(infer_sd, infer_model), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(folded_model(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(infer_model(x), want, rtol=1e-5, atol=1e-5)
    # infer layout -> train-mode model: the filter is pure, so it names the fix instead of folding the model
    train_model = timm.create_model("vheat_tiny", **MICRO).eval()
    before = {k: v.clone() for k, v in train_model.state_dict().items()}
    with pytest.raises(CheckpointFormatError, match="infer_mode=True"):
        checkpoint_filter_fn(infer_sd, train_model)
    assert not train_model.infer_mode and all(torch.equal(v, before[k]) for k, v in train_model.state_dict().items())
    with pytest.raises(CheckpointFormatError, match="folded for a"):
        checkpoint_filter_fn(infer_sd, timm.create_model("vheat_tiny", **dict(MICRO, img_size=96)))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_create_model_pretrained_file_overlay(tmp_path, suffix):
    source = _micro(seed=8)
    if suffix == ".pth":
        path = _official_file(tmp_path, source, ema_offset=0.0)  # timm's reader prefers model_ema
    else:
        from safetensors.torch import save_file

        path = tmp_path / "m.safetensors"
        save_file(source.state_dict(), path)
    loaded = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **MICRO)
    assert _same_weights(loaded, source)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_pretrained_with_other_in_chans_and_num_classes(tmp_path, in_chans):
    source = _micro(seed=9)
    path = _official_file(tmp_path, source, ema_offset=0.0)
    model = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              in_chans=in_chans, num_classes=5, **MICRO)
    w, w0 = model.patch_embed.conv1.weight, source.patch_embed.conv1.weight
    assert w.shape[1] == in_chans and model.get_classifier().out_features == 5
    if in_chans == 1:  # timm's adapt_input_conv: RGB weights summed
        torch.testing.assert_close(w, w0.sum(1, keepdim=True))
    else:  # repeated and rescaled by 3 / in_chans
        torch.testing.assert_close(w[:, :3], w0 * 3 / in_chans)
    assert _same_weights(model, source, skip={"patch_embed.conv1.weight", "classifier.3.weight", "classifier.3.bias"})
    assert model(torch.randn(1, in_chans, 64, 64)).shape == (1, 5)
    direct = timm.create_model("vheat_tiny", in_chans=in_chans, num_classes=5, **MICRO)
    direct.load_pretrained(str(path))  # the wrapper adapts the first conv the same way
    torch.testing.assert_close(direct.patch_embed.conv1.weight, w)


def test_pretrained_hf_hub_id_resolved_by_timm_offline(tmp_path, monkeypatch):
    """hf_hub_id in the pretrained_cfg: timm's hub path, served from a local Hugging Face cache."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never the network
    source = _micro(seed=13)
    repo = tmp_path / "models--local--vheat-micro"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(source.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="local/vheat-micro"),
                               cache_dir=tmp_path, **MICRO)
    assert _same_weights(loaded, source)


def test_pretrained_needs_a_source():
    with pytest.raises(ValueError, match="needs a source"):
        timm.create_model("vheat_tiny", pretrained=True, **MICRO)


def test_load_pretrained_wrapper_and_timm_load_checkpoint(tmp_path):
    source = _micro(seed=10)
    path = _official_file(tmp_path, source)
    model = timm.create_model("vheat_tiny", **MICRO, num_classes=3)
    model.load_pretrained(str(path))  # 'model' entry; head of another class count kept
    assert _same_weights(model, source, skip={"classifier.3.weight", "classifier.3.bias"})
    assert model.get_classifier().out_features == 3
    model.load_pretrained(str(path), key="model_ema")
    torch.testing.assert_close(model.freq_embed[1], source.freq_embed[1] + 0.5)
    same = timm.create_model("vheat_tiny", **MICRO)
    load_checkpoint(same, str(path), filter_fn=checkpoint_filter_fn, use_ema=False)
    assert _same_weights(same, source)


def test_official_golden_checkpoint_through_timm(tmp_path):
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    g = torch.load(GOLDEN, weights_only=False)["micro_postnorm_ls"]
    torch.save({"model": {f"module.{k}": v for k, v in g["state_dict"].items()}}, tmp_path / "official.pth")
    cfg = g["config"]
    model = timm.create_model("vheat_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth"),
                              num_classes=cfg["num_classes"]), **cfg).eval()
    with torch.no_grad():
        assert (model(g["input"]) - g["logits"]).abs().max().item() <= 1e-5


# --- TorchScript and torch.export ------------------------------------------------------------------
def test_jit_trace_passes_its_check(tiny):
    x = torch.randn(2, 3, 224, 224)
    traced = torch.jit.trace(tiny, (x,), check_inputs=[(torch.randn(1, 3, 224, 224),)])
    with torch.no_grad():
        x3 = torch.randn(3, 3, 224, 224)
        torch.testing.assert_close(traced(x3), tiny(x3), rtol=1e-5, atol=1e-5)


@needs_ops
def test_jit_trace_of_a_train_mode_model_runs_at_other_sizes():
    """The README's promise: a train-mode graph resizes freq_embed (and rebuilds E) at run time."""
    model = _micro()
    traced = torch.jit.trace(model, torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        for size in [(96, 96), (48, 80)]:
            x = torch.randn(2, 3, *size)
            torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export_dynamic_batch():
    model = _micro(seed=11)
    program = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


@needs_ops
@pytest.mark.parametrize("infer_mode", [False, True])
def test_jit_script_runs_saves_and_matches_eager(tiny, tmp_path, infer_mode):
    model = timm.create_model("vheat_tiny").eval()
    model.load_state_dict(tiny.state_dict())
    if infer_mode:
        model.set_infer_mode(True)
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, tmp_path / "m.pt")
    loaded = torch.jit.load(tmp_path / "m.pt")
    sizes = [(224, 224)] if infer_mode else [(224, 224), (256, 192)]  # train mode: freq_embed resized in script
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(2, 3, *size)
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


@needs_ops
def test_jit_script_backward_matches_eager():
    model = _micro(seed=12, post_norm=True, layer_scale=0.5, drop_path_rate=0.0).train()
    _assert_same_gradients(model, torch.jit.script(model))


def test_jit_script_without_the_op_library_is_a_clear_error(monkeypatch):
    import vheat_kernels

    monkeypatch.setattr(vheat_kernels, "extension_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch.jit.script needs the compiled vheat ops"):
        torch.jit.script(_micro())
