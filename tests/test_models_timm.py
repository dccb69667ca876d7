"""timm integration of the vHeat models: registry, pretrained from local files, features, optimizer groups."""
from __future__ import annotations

import pytest
import timm
import torch

import vheat  # noqa: F401  (registers the timm models)
from vheat.models import MODEL_ARGS, VHeat

from model_helpers import MICRO  # noqa: E402

MICRO = dict(MICRO, dims=8)
VARIANTS = ["vheat_tiny", "vheat_small", "vheat_base"]


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _random_weights(model: VHeat, seed: int) -> VHeat:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("name", VARIANTS)
def test_registered_with_official_config(name):
    assert name in timm.list_models("vheat_*")
    with torch.device("meta"):
        model = timm.create_model(name)
    args = MODEL_ARGS[name]
    assert isinstance(model, VHeat)
    assert model.depths == list(args["depths"]) and model.embed_dim == args["dims"]
    post_norm = args["post_norm"]
    block = model.layers[2][0]
    assert block.post_norm == post_norm and block.layer_scale == (args["layer_scale"] is not None)
    assert model.layers[3][-2].drop_path.drop_prob == pytest.approx(args["drop_path_rate"])  # last block
    cfg = model.pretrained_cfg
    assert not cfg.get("url") and not cfg.get("hf_hub_id")  # nothing to download
    assert cfg["classifier"] == "classifier.3" and cfg["first_conv"] == "patch_embed.conv1"


def test_create_model_kwargs_and_head_reset():
    model = timm.create_model("vheat_small", **MICRO, num_classes=7, hco_backend="fft", drop_rate=0.1)
    assert all(b.op.hco_backend == "fft" for s in model.layers for b in s.blocks)
    x = torch.randn(2, 3, 50, 70)
    assert model(x).shape == (2, 7)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model(x).shape == (2, 3)


def test_pretrained_from_local_file_only(tmp_path, monkeypatch):
    source = _random_weights(timm.create_model("vheat_tiny", **MICRO), seed=1)
    sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "vheat_micro.pth"
    torch.save({"model": sd, "model_ema": sd}, path)

    loaded = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **MICRO)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))

    tuned = timm.create_model(  # fine-tuning head: timm drops the 1000-class Linear
        "vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=5, **MICRO
    )
    assert tuned.get_classifier().out_features == 5
    assert torch.equal(tuned.freq_embed[2], source.freq_embed[2])

    # No source: a clear error, whatever the environment says (nothing is read from it).
    monkeypatch.setenv("VHEAT_TINY_CHECKPOINT", str(path))
    with pytest.raises(ValueError, match="pretrained_cfg_overlay=dict\\(file="):
        timm.create_model("vheat_tiny", pretrained=True, **MICRO)


def test_pretrained_at_another_img_size_resizes_freq_embed(tmp_path):
    source = _random_weights(timm.create_model("vheat_tiny", **MICRO), seed=2)
    torch.save({"model": source.state_dict()}, tmp_path / "m.pth")
    bigger = timm.create_model(
        "vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "m.pth")), **dict(MICRO, img_size=96)
    )
    assert tuple(bigger.freq_embed[0].shape) == (24, 24, 8)
    # Stored grids resized once at load equal the run-time resize of the 64-px model: same outputs at 96 px.
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(bigger.eval()(x), source.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 3), (2,)])
def test_features_only_strides(out_indices):
    model = timm.create_model("vheat_base", features_only=True, out_indices=out_indices, **MICRO, hco_backend="fft")
    dims = [8, 16, 32, 64]
    assert model.feature_info.channels() == [dims[i] for i in out_indices]
    assert model.feature_info.reduction() == [4 * 2**i for i in out_indices]
    feats = model(torch.randn(2, 3, 77, 61))  # not divisible by 32, not square
    sizes = [(20, 16), (10, 8), (5, 4), (3, 2)]
    assert [tuple(f.shape) for f in feats] == [(2, dims[i], *sizes[i]) for i in out_indices]
    assert len(model.model.layers) == max(out_indices) + 1  # later stages pruned


def test_features_match_full_model_stage_outputs():
    full = _random_weights(timm.create_model("vheat_tiny", **MICRO), seed=3).eval()
    feats_model = timm.create_model("vheat_tiny", features_only=True, **MICRO).eval()
    feats_model.model.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        final, inter = full.forward_intermediates(x)
        feats = feats_model(x)
        torch.testing.assert_close(final, full.forward_features(x), rtol=0, atol=0)
    assert len(feats) == len(inter) == 4
    for a, b in zip(feats, inter):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _official_weight_decay_split(model):
    """Official classification/utils/optimizer.py set_weight_decay (vHeat defines no skip lists)."""
    decay, no_decay = set(), set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() == 1 or name.endswith(".bias") else decay).add(id(p))
    return decay, no_decay


@pytest.mark.parametrize("infer_mode", [False, True])
def test_optimizer_weight_decay_groups_match_official(infer_mode):
    from timm.optim import create_optimizer_v2

    model = timm.create_model("vheat_small", **MICRO, infer_mode=infer_mode)
    assert model.no_weight_decay() == set()
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.08)
    got_decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    got_no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decay, no_decay = _official_weight_decay_split(model)
    assert got_decay == decay and got_no_decay == no_decay
    names = {id(p): n for n, p in model.named_parameters()}
    if not infer_mode:
        assert {id(p) for p in model.freq_embed} <= got_decay  # freq_embed (3-D) is decayed officially
    assert any(names[i].endswith("gamma1") for i in got_no_decay)


def test_grad_checkpointing_switch():
    model = timm.create_model("vheat_tiny", **MICRO)
    model.set_grad_checkpointing(True)
    assert all(b.grad_checkpointing for s in model.layers for b in s.blocks)
    model.set_grad_checkpointing(False)
    assert not any(b.grad_checkpointing for s in model.layers for b in s.blocks)


def test_forward_intermediates_options():
    model = _random_weights(timm.create_model("vheat_tiny", **MICRO, hco_backend="fft"), seed=4).eval()
    x = torch.randn(2, 3, 72, 40)
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        last2 = model.forward_intermediates(x, indices=2, norm=True, output_fmt="NHWC", intermediates_only=True)
        early = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]
    torch.testing.assert_close(last2[0], feats[2].permute(0, 2, 3, 1), rtol=0, atol=0)
    torch.testing.assert_close(last2[1], model.classifier[0](feats[3]).permute(0, 2, 3, 1), rtol=0, atol=0)
    assert early[0].shape == (2, 32, 5, 3)  # stopped after stage 1: its downsampled output
    torch.testing.assert_close(early[1][0], feats[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("coarse", [False, True])
def test_group_matcher_for_layer_decay(coarse):
    from timm.models import group_parameters
    from timm.optim import create_optimizer_v2

    model = timm.create_model("vheat_tiny", **MICRO)
    groups = group_parameters(model, model.group_matcher(coarse))
    where = {name: g for g, names in groups.items() for name in names}
    assert set(where) == {n for n, _ in model.named_parameters()}
    assert where["patch_embed.conv1.weight"] < where["freq_embed.0"] == where["layers.0.0.norm1.weight"]
    assert where["freq_embed.2"] == where["layers.2.0.op.linear.weight"] < where["layers.3.0.op.linear.weight"]
    assert where["classifier.3.weight"] == max(where.values())
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert max(g["lr_scale"] for g in opt.param_groups) == 1.0
