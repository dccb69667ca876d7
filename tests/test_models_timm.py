"""timm integration of the vHeat models: registry, default_cfg, heads and global_pool, features, optimizer groups."""
from __future__ import annotations

import pytest
import timm
import torch

import vheat  # noqa: F401  (registers the timm models)
from vheat.models import MODEL_ARGS, VHeat

from model_helpers import MICRO, random_weights, timm_micro  # noqa: E402

MICRO = dict(MICRO, dims=8)
VARIANTS = ["vheat_tiny", "vheat_small", "vheat_base"]
POOLS = ["avg", "max", "avgmax", "catavgmax"]


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


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
    full = random_weights(timm.create_model("vheat_tiny", **MICRO), seed=3).eval()
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
    model = random_weights(timm.create_model("vheat_tiny", **MICRO, hco_backend="fft"), seed=4).eval()
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
    model = timm_micro(global_pool=pool, num_classes=5)
    reference = timm_micro(num_classes=5)  # official head: avg
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
    model = timm_micro(num_classes=5).double()
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
