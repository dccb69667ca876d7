"""Loading weights into vHeat models: official checkpoints (train and infer layouts, 'model' /
'model_ema', DataParallel prefixes), timm's pretrained path (checkpoint_filter_fn, file= /
local-dir: / hf_hub_id, in_chans, num_classes, img_size), VHeat.load_pretrained, safetensors,
and a failed load that leaves the model as it was."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import load_checkpoint

import vheat  # noqa: F401  (registers the timm models)
from reference_data import GOLDEN
from vheat.checkpoint_io import CheckpointFormatError, load_official_checkpoint, load_weights, save_official_checkpoint
from vheat.models import VHeat, checkpoint_filter_fn

from model_helpers import MICRO, random_micro, random_weights, same_weights, timm_micro

MICRO = dict(MICRO, dims=8)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


# --- pretrained weights through timm's path --------------------------------------------------------
def _official_file(tmp_path, model: VHeat, name: str = "ckpt.pth", ema_offset: float = 0.5):
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / name
    torch.save({"model": sd, "model_ema": {k: v + ema_offset for k, v in sd.items()}, "epoch": 7}, path)
    return path


# --- safetensors and save_for_hf -------------------------------------------------------------------
def test_safetensors_roundtrip(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = tiny.state_dict()
    assert all(v.is_contiguous() for v in sd.values())
    assert tiny.patch_embed.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # fast layout kept
    save_file(sd, tmp_path / "m.safetensors")
    fresh = timm.create_model("vheat_tiny")
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    assert same_weights(fresh, tiny)
    assert fresh.layers[2][0].op.dwconv.weight.is_contiguous(memory_format=torch.channels_last)


def test_save_for_hf_then_local_dir_pretrained(tmp_path):
    from timm.models import save_for_hf

    source = timm_micro(seed=3, num_classes=6)
    save_for_hf(source, tmp_path, model_config=dict(num_classes=6, **MICRO), safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "vheat_tiny"
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert same_weights(loaded, source) and loaded.num_classes == 6
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_checkpoint_filter_fn_maps_official_checkpoints():
    source = timm_micro(seed=6)
    raw = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "model_ema": {}}
    target = timm.create_model("vheat_tiny", **MICRO)
    target.load_state_dict(checkpoint_filter_fn(raw, target), strict=True)  # 'model' entry, prefix stripped
    assert same_weights(target, source)

    bigger = timm.create_model("vheat_tiny", **dict(MICRO, img_size=96))  # freq_embed of another resolution
    sd = checkpoint_filter_fn(source.state_dict(), bigger)
    assert sd["freq_embed.0"].shape == (24, 24, 8)
    bigger.load_state_dict(sd, strict=True)


def test_checkpoint_filter_fn_maps_train_and_infer_layouts():
    source = timm_micro(seed=7)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = source(x)
    # train layout -> infer-mode model: folded into k_exp by the filter
    folded_model = timm.create_model("vheat_tiny", **MICRO, infer_mode=True).eval()
    folded_model.load_state_dict(checkpoint_filter_fn(source.state_dict(), folded_model), strict=True)
    # infer layout (k_exp) -> infer-mode model: as it is
    infer_sd = timm_micro(seed=7).set_infer_mode(True).state_dict()
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
    source = timm_micro(seed=8)
    if suffix == ".pth":
        path = _official_file(tmp_path, source, ema_offset=0.0)  # timm's reader prefers model_ema
    else:
        from safetensors.torch import save_file

        path = tmp_path / "m.safetensors"
        save_file(source.state_dict(), path)
    loaded = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **MICRO)
    assert same_weights(loaded, source)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_pretrained_with_other_in_chans_and_num_classes(tmp_path, in_chans):
    source = timm_micro(seed=9)
    path = _official_file(tmp_path, source, ema_offset=0.0)
    model = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              in_chans=in_chans, num_classes=5, **MICRO)
    w, w0 = model.patch_embed.conv1.weight, source.patch_embed.conv1.weight
    assert w.shape[1] == in_chans and model.get_classifier().out_features == 5
    if in_chans == 1:  # timm's adapt_input_conv: RGB weights summed
        torch.testing.assert_close(w, w0.sum(1, keepdim=True))
    else:  # repeated and rescaled by 3 / in_chans
        torch.testing.assert_close(w[:, :3], w0 * 3 / in_chans)
    assert same_weights(model, source, skip={"patch_embed.conv1.weight", "classifier.3.weight", "classifier.3.bias"})
    assert model(torch.randn(1, in_chans, 64, 64)).shape == (1, 5)
    direct = timm.create_model("vheat_tiny", in_chans=in_chans, num_classes=5, **MICRO)
    direct.load_pretrained(str(path))  # the wrapper adapts the first conv the same way
    torch.testing.assert_close(direct.patch_embed.conv1.weight, w)


def test_pretrained_hf_hub_id_resolved_by_timm_offline(tmp_path, monkeypatch):
    """hf_hub_id in the pretrained_cfg: timm's hub path, served from a local Hugging Face cache."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never the network
    source = timm_micro(seed=13)
    repo = tmp_path / "models--local--vheat-micro"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(source.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = timm.create_model("vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="local/vheat-micro"),
                               cache_dir=tmp_path, **MICRO)
    assert same_weights(loaded, source)


def test_pretrained_needs_a_source():
    with pytest.raises(ValueError, match="needs a source"):
        timm.create_model("vheat_tiny", pretrained=True, **MICRO)


def test_load_pretrained_wrapper_and_timm_load_checkpoint(tmp_path):
    source = timm_micro(seed=10)
    path = _official_file(tmp_path, source)
    model = timm.create_model("vheat_tiny", **MICRO, num_classes=3)
    model.load_pretrained(str(path))  # 'model' entry; head of another class count kept
    assert same_weights(model, source, skip={"classifier.3.weight", "classifier.3.bias"})
    assert model.get_classifier().out_features == 3
    model.load_pretrained(str(path), key="model_ema")
    torch.testing.assert_close(model.freq_embed[1], source.freq_embed[1] + 0.5)
    same = timm.create_model("vheat_tiny", **MICRO)
    load_checkpoint(same, str(path), filter_fn=checkpoint_filter_fn, use_ema=False)
    assert same_weights(same, source)


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


def test_pretrained_from_local_file_only(tmp_path, monkeypatch):
    source = random_weights(timm.create_model("vheat_tiny", **MICRO), seed=1)
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
    source = random_weights(timm.create_model("vheat_tiny", **MICRO), seed=2)
    torch.save({"model": source.state_dict()}, tmp_path / "m.pth")
    bigger = timm.create_model(
        "vheat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "m.pth")), **dict(MICRO, img_size=96)
    )
    assert tuple(bigger.freq_embed[0].shape) == (24, 24, 8)
    # Stored grids resized once at load equal the run-time resize of the 64-px model: same outputs at 96 px.
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(bigger.eval()(x), source.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("build_infer_mode", [False, True])
def test_official_checkpoint_file_loads_strict(golden, tmp_path, build_infer_mode):
    g = golden["micro_postnorm_ls"]
    ema = {f"module.{k}": v + 0.01 for k, v in g["state_dict"].items()}
    torch.save({"model": {f"module.{k}": v for k, v in g["state_dict"].items()}, "model_ema": ema, "epoch": 3}, tmp_path / "ckpt.pth")
    model = VHeat(**g["config"], infer_mode=build_infer_mode, hco_backend="reference").eval()
    result = load_official_checkpoint(model, tmp_path / "ckpt.pth")
    assert not result.missing_keys and not result.unexpected_keys
    assert model.infer_mode == build_infer_mode  # a train-layout checkpoint refolds an infer-mode model
    with torch.no_grad():
        assert (model(g["input"]) - g["logits"]).abs().max().item() <= 1e-5
    load_official_checkpoint(model, tmp_path / "ckpt.pth", key="model_ema")
    assert torch.equal(model.patch_embed.conv1.weight, g["state_dict"]["patch_embed.conv1.weight"] + 0.01)


def test_checkpoint_loader_errors(tmp_path):
    model = random_micro()
    with pytest.raises(ValueError, match="no 'model_ema' entry"):
        load_official_checkpoint(model, {"model": model.state_dict(), "epoch": 1}, key="model_ema")
    bad = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    with pytest.raises(RuntimeError, match="classifier"):
        load_official_checkpoint(model, bad)
    torch.save({"model": model.state_dict(), "note": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_official_checkpoint(model, tmp_path / "pickled.pth")
    load_official_checkpoint(model, tmp_path / "pickled.pth", allow_pickle=True)


def test_save_official_checkpoint_roundtrip(tmp_path):
    model, other = random_micro(seed=1), random_micro(seed=2)
    save_official_checkpoint(tmp_path / "out.pth", model, model_ema=other, epoch=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pth"]  # no temp file left behind
    fresh = random_micro(seed=3)
    load_official_checkpoint(fresh, tmp_path / "out.pth", key="model_ema")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), other.state_dict().values()))


def test_infer_state_dict_into_train_model(tmp_path):
    model = random_micro(hco_backend="fft").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    model.infer_init()
    fresh = random_micro(seed=7, hco_backend="fft").eval()
    load_official_checkpoint(fresh, {"model": model.state_dict()})
    assert fresh.infer_mode
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref, rtol=0, atol=2e-6)
        with pytest.raises(RuntimeError, match="folded"):
            fresh(torch.randn(1, 3, 96, 96))  # no freq_embed / to_k to derive E at another size
    with pytest.raises(RuntimeError, match="one-way"):
        fresh.set_infer_mode(False)


def _snapshot(model):
    return model.infer_mode, {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snapshot):
    infer_mode, values = snapshot
    assert model.infer_mode == infer_mode
    state = model.state_dict()
    assert list(state) == list(values)
    assert all(torch.equal(state[k], values[k]) for k in values)


def _other_checkpoint(tmp_path, infer_mode):
    other = timm.create_model("vheat_small", infer_mode=infer_mode)
    path = tmp_path / "small.pth"
    save_official_checkpoint(path, other)
    return path


@pytest.mark.parametrize("ckpt_infer, model_infer", [(True, False), (False, True), (True, True)])
def test_load_weights_of_another_size_changes_nothing(tmp_path, ckpt_infer, model_infer):
    model = timm.create_model("vheat_tiny", infer_mode=model_infer)
    before = _snapshot(model)
    with pytest.raises(CheckpointFormatError, match="does not fit model"):
        load_weights(model, _other_checkpoint(tmp_path, ckpt_infer))
    _assert_unchanged(model, before)
    if not model_infer:  # the train weights are still there to fold with
        model.set_infer_mode(True)


def test_load_pretrained_of_another_size_changes_nothing(tmp_path):
    model = timm.create_model("vheat_tiny")
    before = _snapshot(model)
    with pytest.raises(RuntimeError):
        model.load_pretrained(str(_other_checkpoint(tmp_path, True)))
    _assert_unchanged(model, before)


def test_successful_infer_load_still_drops_the_train_weights(tmp_path):
    source = timm.create_model("vheat_tiny", infer_mode=True)
    path = tmp_path / "tiny_infer.pth"
    save_official_checkpoint(path, source)
    model = timm.create_model("vheat_tiny")
    load_weights(model, path)
    assert model.infer_mode and not any("freq_embed" in k for k in model.state_dict())
    with pytest.raises(RuntimeError, match="one-way"):
        model.set_infer_mode(False)
