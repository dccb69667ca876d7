"""A failed weight load leaves the model as it was: mode, state_dict keys and values."""
import pytest
import timm
import torch

import vheat  # noqa: F401  (registers the timm models)
from vheat.checkpoint_io import CheckpointFormatError, load_weights, save_official_checkpoint


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
