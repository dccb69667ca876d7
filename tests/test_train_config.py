"""Config loading (strict keys, overrides), the shipped recipes, and timm recipe pieces."""
import math

import pytest
import timm
import torch

from vheat.configs import resolve_config_path
from vheat.train.config import ConfigError, load_config
from vheat.train.recipe import build_optimizer, build_scheduler, scaled_lrs


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  weight_decy: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.weight_decy' in config file .*known keys"):
        load_config(str(path))


def test_unknown_section_and_override():
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["train=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.epochs"])


def test_values_validated():
    with pytest.raises(ConfigError, match="train.amp .*bf16"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match="positive integer"):
        load_config(None, ["data.batch_size=0"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(None, ["train.epochs=5", "train.warmup_epochs=5"])


def test_overrides_parse_yaml_and_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  base_lr: 5e-4\nmodel:\n  kwargs: {depths: [1, 1]}\n")
    cfg = load_config(str(path), ["train.min_lr=1e-6", "aug.scale=[0.5, 1.0]", "model.kwargs={dims: 8}"])
    assert cfg["train"]["base_lr"] == 5e-4 and cfg["train"]["min_lr"] == 1e-6
    assert cfg["aug"]["scale"] == [0.5, 1.0]
    assert cfg["model"]["kwargs"] == {"depths": [1, 1], "dims": 8}  # merged into the file's kwargs
    assert load_config(str(path), ["model.kwargs=null"])["model"]["kwargs"] == {}  # null empties it


@pytest.mark.parametrize("name, drop_path", [("vheat_tiny", 0.1), ("vheat_small", 0.3), ("vheat_base", 0.5)])
def test_shipped_imagenet_recipes(name, drop_path):
    cfg = load_config(resolve_config_path(name))
    t, a = cfg["train"], cfg["aug"]
    assert cfg["model"]["name"] == name and cfg["model"]["drop_path_rate"] == drop_path
    assert (t["opt"], t["weight_decay"], t["base_lr"], t["lr_reference_batch"]) == ("adamw", 0.08, 5e-4, 512)
    assert (t["epochs"], t["warmup_epochs"], t["sched"], t["clip_grad"]) == (300, 20, "cosine", 5.0)
    assert t["ema"] and t["ema_decay"] == 0.9999
    assert a["auto_augment"] == "rand-m9-mstd0.5-inc1" and a["re_prob"] == 0.25
    assert (a["mixup"], a["cutmix"], a["label_smoothing"]) == (0.8, 1.0, 0.1)
    # official linear scaling: 128 per GPU x 8 GPUs -> lr 1e-3
    lrs = scaled_lrs(cfg, world=8)
    assert math.isclose(lrs.base, 1e-3) and math.isclose(lrs.warmup, 1e-6) and math.isclose(lrs.minimum, 1e-5)


def test_demo_config_loads():
    cfg = load_config(resolve_config_path("demo_digits"))
    assert cfg["data"]["dataset"] == "digits" and cfg["model"]["hco_backend"] == "cpu"


def test_per_iteration_cosine_with_warmup_prefix():
    cfg = load_config(None, ["train.epochs=5", "train.warmup_epochs=1", "train.lr_reference_batch=0",
                             "train.base_lr=1e-3", "train.warmup_lr=1e-6", "train.min_lr=1e-5"])
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    steps = 7
    sched = build_scheduler(cfg, opt, scaled_lrs(cfg, 1), steps)
    lrs = []
    for s in range(5 * steps + 1):
        sched.step_update(s)
        lrs.append(opt.param_groups[0]["lr"])
    assert math.isclose(lrs[0], 1e-6)
    assert all(b > a for a, b in zip(lrs[:steps], lrs[1:steps + 1]))  # linear warm-up, per step
    assert math.isclose(lrs[steps], 1e-3, rel_tol=1e-9)
    assert all(b < a for a, b in zip(lrs[steps:-1], lrs[steps + 1:]))  # cosine decays every step
    assert math.isclose(lrs[-1], 1e-5, rel_tol=1e-6)  # reaches min lr exactly at train.epochs
    mid = steps + 2 * steps  # halfway through the 4 cosine epochs
    assert math.isclose(lrs[mid], 1e-5 + 0.5 * (1e-3 - 1e-5), rel_tol=1e-6)


def test_no_weight_decay_on_1d_params_and_biases():
    import vheat  # noqa: F401  (registers the models)

    cfg = load_config(None, ["train.weight_decay=0.08"])
    model = timm.create_model("vheat_tiny", depths=[1, 1], dims=8, img_size=16, num_classes=3)
    opt = build_optimizer(cfg, model, 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["fused"] for g in opt.param_groups)  # torch's fused step, not the per-parameter loop
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 0.0 if (p.ndim <= 1 or name.endswith(".bias")) else 0.08
        assert wd_of[id(p)] == expected, name
    assert wd_of[id(model.freq_embed[0])] == 0.08  # 3-D freq_embed is decayed, as in the official code
