"""Official vHeat checkpoints ({"model", "model_ema"}, ``module.`` prefix) through the trainer's loaders:
golden official logits reproduced, fine-tuning head swap, wrong-architecture and pickled-extra messages."""
import argparse
import os

import pytest
import torch
import yaml

from vheat.train.checkpoint import CheckpointFormatError
from vheat.train.config import load_config
from vheat.checkpoint_io import load_weights
from vheat.train.model_factory import build_model

from reference_data import GOLDEN

pytestmark = pytest.mark.skipif(not GOLDEN.exists(), reason="official golden reference data not present")


def _cfg(entry, *extra):
    c = dict(entry["config"])
    kwargs = {k: v for k, v in c.items() if k not in ("num_classes", "img_size")}
    flow = yaml.safe_dump(kwargs, default_flow_style=True).strip()
    return load_config(None, [f"model.kwargs={flow}", f"data.img_size={c['img_size']}", "model.name=vheat_tiny",
                              "model.drop_path_rate=0.0", *extra])


def _official_file(tmp_path, sd, **extra):
    path = tmp_path / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()},
                "model_ema": {"module." + k: v.clone() for k, v in sd.items()}, **extra}, path)
    return str(path)


@pytest.mark.parametrize("variant", ["micro_prenorm", "micro_postnorm_ls"])
@pytest.mark.parametrize("key", ["model", "model_ema"])
def test_official_checkpoint_reproduces_official_logits(golden, tmp_path, variant, key):
    entry = golden[variant]
    path = _official_file(tmp_path, entry["state_dict"])
    model = build_model(_cfg(entry), entry["config"]["num_classes"])
    assert load_weights(model, path, key, arch="vheat_tiny") == key
    with torch.no_grad():
        logits = model.eval()(entry["input"])
    torch.testing.assert_close(logits, entry["logits"], rtol=1e-4, atol=1e-4)


def test_finetune_from_official_swaps_only_the_head(golden, tmp_path):
    entry = golden["micro_prenorm"]
    path = _official_file(tmp_path, entry["state_dict"])
    model = build_model(_cfg(entry), 4)
    load_weights(model, path, drop_head_if_mismatch=True, arch="vheat_tiny")
    own = model.state_dict()
    for k, v in entry["state_dict"].items():
        if k.startswith("classifier.3."):
            assert own[k].shape[0] == 4
        else:
            assert torch.equal(own[k], v), k


def test_other_architecture_is_a_clear_error(golden, tmp_path):
    post = golden["micro_postnorm_ls"]
    path = _official_file(tmp_path, post["state_dict"])
    pre_model = build_model(_cfg(golden["micro_prenorm"]), 10)  # no layer-scale gammas
    with pytest.raises(CheckpointFormatError, match=r"does not fit model 'vheat_tiny'.*unexpected keys.*gamma"):
        load_weights(pre_model, path, arch="vheat_tiny")


def test_pickled_extras_need_trust(golden, tmp_path):
    entry = golden["micro_prenorm"]
    path = _official_file(tmp_path, entry["state_dict"], args=argparse.Namespace(lr=1e-3))  # Swin-style extra
    model = build_model(_cfg(entry), 10)
    with pytest.raises(CheckpointFormatError, match="trust_checkpoint=true"):
        load_weights(model, path, arch="vheat_tiny")
    load_weights(model, path, arch="vheat_tiny", allow_pickle=True)
    assert torch.equal(model.state_dict()["patch_embed.conv1.weight"], entry["state_dict"]["patch_embed.conv1.weight"])
    assert os.path.getsize(path) > 0
