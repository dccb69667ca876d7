"""Progress output as a CI log or ``vheat train > log`` receives it: stdout and stderr are pipes here."""
import pytest
import yaml

from train_helpers import make_image_folder, run_cli, tiny_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    folder = make_image_folder(str(tmp / "ds"))
    cfg = tiny_config(folder, str(tmp / "run"), "train.epochs=1", "train.log_every=2", "train.progress=off")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp


def test_default_progress_in_a_pipe_is_log_lines_not_bar_frames(config):
    path, tmp = config
    code, out, err = run_cli("train", "-c", path, "-o", tmp / "auto", "--set", "train.progress=auto")
    assert code == 0, out + err
    assert "\r" not in out + err
    assert "epoch 1/1 step 2/6: loss " in out and "epoch 1/1 step 6/6: loss " in out  # every train.log_every steps
    assert "epoch 1/1: train loss " in out


def test_progress_flag_wins_over_the_config_file(config):
    path, tmp = config  # the file says train.progress: 'off'
    code, out, err = run_cli("train", "-c", path, "-o", tmp / "on", "--progress", "on")
    assert code == 0, out + err
    assert "\r" in err and "epoch 1/1" in err  # tqdm frames, asked for even in a pipe
    assert "step 2/6: loss" not in out  # the bar shows the loss instead
