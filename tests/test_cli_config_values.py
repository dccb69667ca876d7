"""Config values as a user gives them on the command line and in YAML files, through the ``vheat``
entry point in this process (validation only: a subprocess per case would import torch 18 times).
A bad value is one line naming the key, the value and what is accepted, before any work (no output
folder appears); a good one is taken as written."""
import os

import pytest
import yaml

from train_helpers import run_main
from vheat.configs import resolve_config_path

# the old code trained on these silently: one step is enough to tell
SHORT = ("--set", "train.stop_after_steps=1", "data.batch_size=8")

BAD_VALUES = {
    "model.drop_path_rate=2": "model.drop_path_rate must be a finite number >= 0 and < 1, got 2",
    "data.crop_pct=-1": "data.crop_pct must be a finite number > 0 and <= 1, got -1",
    "data.crop_pct=0": "data.crop_pct must be a finite number > 0 and <= 1, got 0",
    "data.mean=[0.5,0.5]": "data.mean must be a list of 3 values (one per RGB channel), each a finite number, "
                           "got [0.5, 0.5]",
    "data.mean=[0.5]": "data.mean must be a list of 3 values (one per RGB channel)",
    "data.std=[0,0,0]": "data.std must be a list of 3 values (one per RGB channel), each a finite number > 0, "
                        "got [0, 0, 0]",
    "data.img_size=3": "data.img_size must be an integer >= 32 for vheat_tiny (4 stages after a patch of 4",
    "train.opt=bogus": "train.opt must be an optimizer name of timm (adamw, sgd, lamb, ...",
    "train.sched=bogus": "train.sched must be one of cosine, tanh, step, multistep, poly, wsd, rsqrt, constant, "
                         "got 'bogus'",
    "model.kwargs.dims=abc": "model.kwargs.dims must be a list of positive integers, one per stage (or one "
                             "positive integer), got 'abc'",
    "aug.label_smoothing=2": "aug.label_smoothing must be a finite number >= 0 and < 1, got 2",
    "aug.hflip=5": "aug.hflip must be a finite number >= 0 and <= 1, got 5",
    "aug.scale=[1.0,0.1]": "aug.scale must be [min, max] with min <= max",
    "data.eval_batch_size=0": "data.eval_batch_size must be a positive integer or null, got 0",
}


@pytest.mark.parametrize("value", list(BAD_VALUES))
def test_bad_value_is_refused_in_one_line_before_any_work(value, tmp_path, capsys):
    code, out, err = run_main(["train", "-c", "demo_digits", "-o", tmp_path / "run", *SHORT, value], capsys)
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and BAD_VALUES[value] in lines[0], err
    assert os.listdir(tmp_path) == []  # no run folder was created


def test_flops_image_size_too_small_is_one_line(capsys):
    code, out, err = run_main(["flops", "-c", "demo_digits", "--img-size", "3"], capsys)
    assert code == 2 and err.strip() == ("vheat: error: data.img_size must be an integer >= 32 for vheat_tiny "
                                         "(4 stages after a patch of 4: each stage halves the grid), got 3"), out + err


def test_one_model_kwargs_override_keeps_the_file_s_other_kwargs(capsys):
    for argv in ([], ["--set", "model.kwargs.dims=32"]):  # dims 32 is the file's own value
        code, out, err = run_main(["flops", "-c", "demo_digits", *argv], capsys)
        assert code == 0 and "1.911 M params" in out, (argv, out + err)


def test_verify_images_off_is_accepted_unquoted(tmp_path, capsys):
    config = yaml.safe_load(open(resolve_config_path("demo_digits")))
    config["data"]["verify_images"] = "off"
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(config).replace("verify_images: 'off'", "verify_images: off"))
    assert "verify_images: off\n" in path.read_text()  # unquoted: YAML reads it as a boolean
    for argv in (["-c", "demo_digits", "--set", "data.verify_images=off"], ["-c", path]):
        code, out, err = run_main(["flops", *argv], capsys)
        assert code == 0 and "GFLOPs" in out, (argv, out + err)
