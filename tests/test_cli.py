"""The vheat command line end to end on tiny data: train, eval (ours and official layout), throughput, flops."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from train_helpers import make_image_folder, run_main as _cli, tiny_config
from vheat.cli.main import main
from vheat.io import read_jsonl
from vheat.train.checkpoint import list_checkpoints, read_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch training run through the CLI, shared by the eval tests."""
    tmp = tmp_path_factory.mktemp("cli")
    folder = make_image_folder(str(tmp / "ds"))
    cfg = tiny_config(folder, str(tmp / "run"), "train.plot=true")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["train", "-c", str(path), "--set", "train.seed=3"])
    finally:
        torch.set_num_threads(old)
    assert exc.value.code == 0
    return dict(folder=folder, config=str(path), out=cfg["output"], tmp=tmp)


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "vheat", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    for command in ("train", "eval", "throughput", "flops"):
        assert command in proc.stdout


def test_train_outputs(trained):
    out = trained["out"]
    records = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(0 <= r["val_acc1"] <= 100 and r["val_acc1"] <= r["val_acc5"] for r in records)
    assert records[1]["train_loss"] < records[0]["train_loss"] + 0.5
    with Image.open(os.path.join(out, "metrics.png")) as img:
        assert img.format == "PNG" and img.size[0] > 500
    saved = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    assert saved["train"]["seed"] == 3  # the --set override is what ran
    assert os.path.exists(os.path.join(out, "best.pth"))
    assert len(list_checkpoints(out)) == 2
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_eval_our_checkpoint_matches_training_log(trained, capsys, tmp_path):
    ckpt = list_checkpoints(trained["out"])[-1]
    report = tmp_path / "eval.json"
    code, out, _ = _cli(["eval", "-c", trained["config"], "--checkpoint", ckpt, "--json", str(report)], capsys)
    assert code == 0 and "model: top-1" in out and "ema: top-1" in out
    results = json.loads(report.read_text())
    last = read_jsonl(os.path.join(trained["out"], "metrics.jsonl"))[-1]
    assert results["model"]["acc1"] == pytest.approx(last["val_acc1"])
    assert results["model"]["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert results["ema"]["acc1"] == pytest.approx(last["ema_val_acc1"])
    assert results["model"]["count"] == 12


def test_eval_official_layout_with_module_prefix(trained, capsys, tmp_path):
    ours = read_checkpoint(list_checkpoints(trained["out"])[-1])
    official = {"model": {"module." + k: v for k, v in ours["model"].items()},
                "model_ema": {"module." + k: v for k, v in ours["model_ema"].items()}}
    path = tmp_path / "official.pth"
    torch.save(official, path)
    ref = tmp_path / "ref.json"
    got = tmp_path / "got.json"
    _cli(["eval", "-c", trained["config"], "--checkpoint", list_checkpoints(trained["out"])[-1], "--json", str(ref)],
         capsys)
    code, out, _ = _cli(["eval", "-c", trained["config"], "--checkpoint", str(path), "--json", str(got)], capsys)
    assert code == 0
    a, b = json.loads(ref.read_text()), json.loads(got.read_text())
    assert a["model"] == b["model"] and a["ema"] == b["ema"]


def test_eval_bare_state_dict(trained, capsys, tmp_path):
    ours = read_checkpoint(list_checkpoints(trained["out"])[-1])
    path = tmp_path / "bare.pth"
    torch.save(ours["model"], path)
    got, ref = tmp_path / "got.json", tmp_path / "ref.json"
    _cli(["eval", "-c", trained["config"], "--checkpoint", list_checkpoints(trained["out"])[-1], "--json", str(ref)],
         capsys)
    code, out, _ = _cli(["eval", "-c", trained["config"], "--checkpoint", str(path), "--json", str(got)], capsys)
    assert code == 0 and "ema:" not in out
    assert json.loads(got.read_text())["model"] == json.loads(ref.read_text())["model"]


def test_eval_other_architecture_is_a_clear_error(trained, capsys):
    ckpt = list_checkpoints(trained["out"])[-1]
    code, _, err = _cli(["eval", "-c", trained["config"], "--checkpoint", ckpt,
                         "--set", "model.kwargs={depths: [1, 2], dims: 8}"], capsys)
    assert code == 2 and "does not fit model 'vheat_tiny'" in err and "missing keys" in err


def test_finetune_keeps_backbone_and_replaces_head(trained):
    from vheat.checkpoint_io import load_weights
    from vheat.train.model_factory import build_model

    best = os.path.join(trained["out"], "best.pth")
    cfg = tiny_config(trained["folder"], str(trained["tmp"] / "ft"), "model.num_classes=5")
    model = build_model(cfg, 5)
    head_before = model.get_classifier().weight.detach().clone()
    load_weights(model, best, drop_head_if_mismatch=True, arch="vheat_tiny")
    src = read_checkpoint(best)["model"]
    own = model.state_dict()
    assert torch.equal(own["patch_embed.conv1.weight"], src["patch_embed.conv1.weight"])
    assert torch.equal(model.get_classifier().weight, head_before) and head_before.shape[0] == 5


@pytest.mark.parametrize("argv, message", [
    (["--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
    (["--data", "/nonexistent/imagenet"], "does not exist"),
    (["--opts", "train.epochs"], "KEY VALUE pairs"),
])
def test_bad_input_messages(trained, capsys, argv, message):
    code, _, err = _cli(["train", "-c", trained["config"], "-o", str(trained["tmp"] / "bad")] + argv, capsys)
    assert code == 2 and message in err, err


def test_unknown_config_name(capsys):
    code, _, err = _cli(["train", "-c", "vheat_huge"], capsys)
    assert code == 2 and "not found" in err and "vheat_tiny" in err


def test_class_mismatch_through_cli(trained, capsys, tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"), n_train=2, n_val=1)
    os.rename(os.path.join(folder, "val", "bee"), os.path.join(folder, "val", "bat"))
    code, _, err = _cli(["train", "-c", trained["config"], "--data", folder, "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "class mismatch" in err


def test_throughput(trained, capsys, tmp_path):
    report = tmp_path / "tp.json"
    code, out, _ = _cli(["throughput", "-c", trained["config"], "--iters", "3", "--warmup", "1",
                         "--batch-size", "8", "--json", str(report)], capsys)
    assert code == 0 and "images/s" in out
    r = json.loads(report.read_text())
    assert r["batch_size"] == 8 and r["iters"] == 3 and r["images_per_s"] > 0
    assert r["peak_memory_bytes"] >= r["peak_rss_before_bytes"] > 0
    code, out, _ = _cli(["throughput", "-c", trained["config"], "--iters", "2", "--warmup", "0", "--train"], capsys)
    assert code == 0 and "train on cpu" in out


def _flops_line(out):
    m = re.search(r"([\d.e+-]+) GFLOPs, [\d.]+ M params \(([\d,]+)(?:, folded k_exp ([\d,]+) of them)?\)", out)
    assert m, out
    return float(m.group(1)), int(m.group(2).replace(",", "")), int((m.group(3) or "0").replace(",", ""))


@pytest.mark.parametrize("infer_mode", [False, True])
def test_flops_is_the_fvcore_counter_and_counts_k_exp(trained, capsys, infer_mode):
    from vheat.flops import count_flops
    from vheat.train.config import load_config
    from vheat.train.model_factory import build_model

    code, out, _ = _cli(["flops", "-c", trained["config"]] + ["--infer-mode"] * infer_mode, capsys)
    assert code == 0
    gflops, params, k_exp = _flops_line(out)
    model = build_model(load_config(trained["config"]), 1000)
    if infer_mode:
        model.set_infer_mode(True)
    assert params == sum(p.numel() for p in model.parameters())
    # tiny config: dims 8 -> [8, 16], depths [1, 1], 16 px -> stage grids 4x4 and 2x2: one k_exp per block
    assert k_exp == (1 * 4 * 4 * 8 + 1 * 2 * 2 * 16 if infer_mode else 0)
    assert gflops == pytest.approx(count_flops(model, 16) / 1e9, rel=1e-3) and gflops > 0


@pytest.mark.slow
@pytest.mark.parametrize("name, gflops, params_m", [("vheat_tiny", 4.94, 30.85), ("vheat_small", 9.17, 52.22),
                                                    ("vheat_base", 16.16, 92.13)])
def test_flops_match_official_train_mode_figures(name, gflops, params_m, capsys):
    """fvcore figures of the official train-mode models at 224 (DESIGN.md, 'Known facts')."""
    code, out, _ = _cli(["flops", "-c", name], capsys)
    got_gflops, got_params, _ = _flops_line(out)
    assert code == 0 and got_gflops == pytest.approx(gflops, abs=0.006)
    assert got_params / 1e6 == pytest.approx(params_m, abs=0.006)


def test_eval_reads_a_trusted_checkpoint_once(trained, capsys, tmp_path, monkeypatch):
    import argparse

    ckpt = read_checkpoint(list_checkpoints(trained["out"])[-1])
    path = tmp_path / "swin_style.pth"
    torch.save({"model": ckpt["model"], "model_ema": ckpt["model_ema"], "args": argparse.Namespace(lr=1)}, path)
    code, _, err = _cli(["eval", "-c", trained["config"], "--checkpoint", str(path)], capsys)
    assert code == 2 and "argparse.Namespace" in err and "model.trust_checkpoint=true" in err
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    code, out, err = _cli(["eval", "-c", trained["config"], "--checkpoint", str(path),
                           "--set", "model.trust_checkpoint=true"], capsys)
    assert code == 0 and "model: top-1" in out and "ema: top-1" in out, err
    assert loads == [str(path)]  # one read for the model and the EMA weights
