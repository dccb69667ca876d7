"""Exporting and tracing vHeat models: FX (symbolic_trace, timm's create_feature_extractor),
ONNX (both torch.onnx exporters, run in onnxruntime), torch.jit.trace / torch.jit.script,
torch.export; each graph agrees with the eager model. vheat_tiny where it is cheap, a micro
config of the same architecture elsewhere.
"""
from __future__ import annotations

import io

import pytest
import timm
import torch

import vheat  # noqa: F401  (registers the timm models)
from vheat.models import VHeat
from vheat.models import tracing
from vheat_kernels import extension_available

from model_helpers import timm_micro  # noqa: E402
needs_ops = pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


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
    model = timm_micro(seed=1)
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
    model = timm_micro(seed=2, drop_path_rate=0.0).train()
    _assert_same_gradients(model, torch.fx.symbolic_trace(model))


def test_timm_fx_feature_extractor():
    from timm.models import create_feature_extractor, get_graph_node_names

    model = timm_micro(seed=4)
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
    model = timm_micro(seed=5, post_norm=True, layer_scale=0.5)
    if infer_mode:
        model.set_infer_mode(True)
    x = torch.randn(3, 3, 64, 64)
    out, _ = _onnx_run(model, torch.randn(2, 3, 64, 64), x, dynamo=False)
    with torch.no_grad():
        assert (out - model(x)).abs().max().item() <= 1e-4


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
    model = timm_micro()
    traced = torch.jit.trace(model, torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        for size in [(96, 96), (48, 80)]:
            x = torch.randn(2, 3, *size)
            torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export_dynamic_batch():
    model = timm_micro(seed=11)
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
    model = timm_micro(seed=12, post_norm=True, layer_scale=0.5, drop_path_rate=0.0).train()
    _assert_same_gradients(model, torch.jit.script(model))


def test_jit_script_without_the_op_library_is_a_clear_error(monkeypatch):
    import vheat_kernels

    monkeypatch.setattr(vheat_kernels, "extension_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch.jit.script needs the compiled vheat ops"):
        torch.jit.script(timm_micro())
