"""VHeatBackbone: shapes and strides at awkward sizes, equality with the classification model's
stage features, the official wrapper's forward, gradient checkpointing, pretrained loading."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vheat.checkpoint_io import CheckpointFormatError, save_official_checkpoint
from vheat.downstream import VHeatBackbone
from vheat.models import VHeat

from model_helpers import MICRO  # noqa: E402

MICRO = dict(MICRO, drop_path_rate=0.0, hco_backend="fft")


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that freq_embed, its resize and every norm change the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("freq_embed"):
                p.normal_(0.0, 1.0)
            elif p.dim() == 1:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return model


def classifier_and_backbone(**kw):
    cls = randomize(VHeat(num_classes=7, **dict(MICRO, **kw)))
    bb = VHeatBackbone(**dict(MICRO, **kw))
    bb.load_classification_checkpoint({"model": cls.state_dict()})
    with torch.no_grad():
        for i in bb.out_indices:
            getattr(bb, f"outnorm{i}").weight.normal_(1.0, 0.3)
            getattr(bb, f"outnorm{i}").bias.normal_(0.0, 0.3)
    return cls, bb


def outnorm(bb, i, feat):
    n = getattr(bb, f"outnorm{i}")
    return F.layer_norm(feat.permute(0, 2, 3, 1), n.normalized_shape, n.weight, n.bias, n.eps).permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", [(64, 64), (67, 101), (97, 33), (4, 61), (131, 7)])
def test_shapes_and_strides(size):
    bb = VHeatBackbone(**MICRO).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = bb(x)
    assert bb.out_channels == [16, 32, 64, 128] and bb.out_strides == [4, 8, 16, 32]
    h, w = size
    for i, out in enumerate(outs):
        for _ in range(2 if i == 0 else 1):  # stride-2 3x3 convs with padding 1: ceil at every step
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert out.shape == (2, bb.dims[i], h, w)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("out_indices", [(1, 3), (2,), (0,)])
def test_out_indices_subset(out_indices):
    bb = VHeatBackbone(out_indices=out_indices, **MICRO)
    names = {k.split(".")[0] for k in bb.state_dict() if k.startswith("outnorm")}
    assert names == {f"outnorm{i}" for i in out_indices}
    outs = bb(torch.randn(1, 3, 40, 72))
    assert [o.shape[1] for o in outs] == [bb.dims[i] for i in out_indices] == bb.out_channels
    assert not any(k.startswith("classifier") for k in bb.state_dict())


@pytest.mark.parametrize("size", [(64, 64), (75, 50)])
@pytest.mark.parametrize("train", [False, True])
def test_features_equal_classification_model(size, train):
    cls, bb = classifier_and_backbone()
    cls.train(train), bb.train(train)
    x = torch.randn(2, 3, *size)
    with torch.set_grad_enabled(train):
        feats = cls.forward_intermediates(x, intermediates_only=True)
        outs = bb(x)
    for i, (f, o) in enumerate(zip(feats, outs)):
        torch.testing.assert_close(o, outnorm(bb, i, f), rtol=1e-5, atol=1e-5)


def test_matches_official_wrapper_forward():
    """The official MMDET_VHEAT forward, restated: per stage, bicubic freq_embed resize when the
    grid differs, stage features before the downsample, LayerNorm outnorm{i}."""
    _, bb = classifier_and_backbone(post_norm=False, layer_scale=None)
    bb.eval()
    x = torch.randn(1, 3, 90, 45)
    with torch.no_grad():
        outs = bb(x)
        y, ref = bb.patch_embed(x), []
        for i, layer in enumerate(bb.layers):
            freq = bb.freq_embed[i]
            if tuple(y.shape[2:]) != tuple(freq.shape[:2]):
                freq = F.interpolate(freq.permute(2, 0, 1)[None], size=y.shape[2:], mode="bicubic")[0].permute(1, 2, 0)
            feat, y = layer(y, freq)
            ref.append(outnorm(bb, i, feat))
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_same_grads():
    _, bb = classifier_and_backbone()
    x = torch.randn(2, 3, 48, 80)

    def grads(enable):
        bb.zero_grad()
        bb.set_grad_checkpointing(enable)
        sum(o.square().mean() for o in bb(x)).backward()
        return {k: p.grad.clone() for k, p in bb.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and any(k.startswith("freq_embed") for k in plain)
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6)
    assert VHeatBackbone(use_checkpoint=True, **MICRO).layers[0].blocks[0].grad_checkpointing


def test_pretrained_from_file_interpolate_and_pad(tmp_path):
    cls = randomize(VHeat(num_classes=5, **MICRO))
    ema = randomize(VHeat(num_classes=5, **MICRO))
    path = tmp_path / "cls.pth"
    save_official_checkpoint(path, cls, ema)
    big = dict(MICRO, img_size=96)  # grids 24, 12, 6, 3 instead of 16, 8, 4, 2

    bb = VHeatBackbone(pretrained=str(path), **big)
    for i in range(4):
        expect = F.interpolate(cls.freq_embed[i].detach().permute(2, 0, 1)[None], size=bb.res[i], mode="bicubic")
        torch.testing.assert_close(bb.freq_embed[i].detach(), expect[0].permute(1, 2, 0))
    torch.testing.assert_close(bb.layers[2][1].op.to_k[0].weight, cls.layers[2][1].op.to_k[0].weight, rtol=0, atol=0)

    padded = VHeatBackbone(pretrained=str(path), pretrained_key="model_ema", freq_embed_fit="pad", **big)
    for i in range(4):
        n = ema.res[i]
        torch.testing.assert_close(padded.freq_embed[i][:n, :n].detach(), ema.freq_embed[i].detach(), rtol=0, atol=0)
        assert padded.freq_embed[i][n:].abs().sum() == 0 and padded.freq_embed[i][:, n:].abs().sum() == 0
    torch.testing.assert_close(padded.patch_embed.conv1.weight, ema.patch_embed.conv1.weight, rtol=0, atol=0)


def test_pretrained_errors(tmp_path):
    cls = VHeat(num_classes=3, **MICRO)
    folded = VHeat(num_classes=3, **MICRO).set_infer_mode(True)
    with pytest.raises(CheckpointFormatError, match="infer-mode layout"):
        VHeatBackbone(**MICRO).load_classification_checkpoint({"model": folded.state_dict()})
    wide = VHeat(num_classes=3, **dict(MICRO, dims=24))
    with pytest.raises(CheckpointFormatError, match="shape mismatch|channels"):
        VHeatBackbone(**MICRO).load_classification_checkpoint({"model": wide.state_dict()})
    prenorm = VHeat(num_classes=3, **dict(MICRO, post_norm=False, layer_scale=None))
    with pytest.raises(CheckpointFormatError, match="missing.*gamma"):
        VHeatBackbone(**dict(MICRO, layer_scale=1e-5)).load_classification_checkpoint({"model": prenorm.state_dict()})
    with pytest.warns(UserWarning, match="keep their init"):
        missing = VHeatBackbone(**dict(MICRO, layer_scale=1e-5)).load_classification_checkpoint(
            {"model": prenorm.state_dict()}, strict=False
        )
    assert missing and all(k.endswith(("gamma1", "gamma2")) for k in missing)
    deeper = VHeat(num_classes=3, **dict(MICRO, depths=(1, 1, 3, 1)))
    with pytest.raises(CheckpointFormatError, match="unexpected"):
        VHeatBackbone(**MICRO).load_classification_checkpoint({"model": deeper.state_dict()})
    with pytest.raises(ValueError, match="cannot shrink"):
        VHeatBackbone(**dict(MICRO, img_size=32)).load_classification_checkpoint(
            {"model": cls.state_dict()}, freq_embed_fit="pad"
        )
    with pytest.raises(ValueError, match="fit mode"):
        VHeatBackbone(**MICRO).load_classification_checkpoint({"model": cls.state_dict()}, freq_embed_fit="nearest")


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_indices"):
        VHeatBackbone(out_indices=(3, 1), **MICRO)
    with pytest.raises(ValueError, match="out_indices"):
        VHeatBackbone(out_indices=(4,), **MICRO)
    bb = VHeatBackbone(**MICRO)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        bb(torch.randn(3, 32, 32))
    with pytest.raises(RuntimeError, match="no classifier"):
        bb.forward_head(torch.randn(1, 128, 2, 2))


def test_infer_mode_same_features_at_the_training_size():
    _, bb = classifier_and_backbone()
    bb.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        train_mode = bb(x)
        bb.set_infer_mode(True)
        folded = bb(x)
        with pytest.raises(RuntimeError, match="folded k_exp is"):
            bb(torch.randn(1, 3, 50, 90))  # other sizes need the train layout
    assert bb.infer_mode
    for a, b in zip(folded, train_mode):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.15), (torch.float64, 1e-4)])  # vs a float32 reference
def test_dtypes(dtype, tol):
    _, bb = classifier_and_backbone()
    bb.eval()
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        ref = bb(x)
        out = bb.to(dtype)(x.to(dtype))
    for o, r in zip(out, ref):
        assert o.dtype == dtype
        torch.testing.assert_close(o.float(), r, rtol=tol, atol=tol)
