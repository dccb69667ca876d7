"""Failure cases as a user meets them: the CLI runs in a subprocess; each test checks the exit code,
the message, and that no file on disk was lost or overwritten (hashes before and after)."""
import json
import os
import resource
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml

from train_helpers import cli_env, make_image_folder, run_cli, snapshot, tiny_config
from vheat.checkpoint_io import write_checkpoint
from vheat.io import read_jsonl
from vheat.train.checkpoint import list_checkpoints, read_checkpoint
from vheat.train.trainer import train

CHOICES = ("--resume PATH", "--output NEW_FOLDER", "--start-over")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-epoch tiny run (both end-of-epoch checkpoints kept) and its config file."""
    tmp = tmp_path_factory.mktemp("fail")
    folder = make_image_folder(str(tmp / "ds"))
    cfg = tiny_config(folder, str(tmp / "run"), "train.keep_checkpoints=2", "train.threads=1")
    train(cfg)
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return dict(out=cfg["output"], config=str(config), tmp=tmp)


@pytest.fixture
def out(run, tmp_path):
    """A private copy of the run folder."""
    dest = str(tmp_path / "run")
    shutil.copytree(run["out"], dest)
    return dest


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_all_checkpoints_unreadable_is_refused_and_nothing_changes(run, out):
    for path in list_checkpoints(out):
        _truncate(path)
    before = snapshot(out)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out)
    assert code == 2, stdout + err
    assert "holds 2 checkpoint(s), none of which can be resumed from" in err
    for path in list_checkpoints(out):
        assert os.path.basename(path) in err
    assert all(choice in err for choice in CHOICES) and "Traceback" not in err
    assert snapshot(out) == before


def test_start_over_sets_the_old_run_aside_intact(run, out):
    for path in list_checkpoints(out):
        _truncate(path)
    before = snapshot(out)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--start-over", "--epochs", "1")
    assert code == 0, stdout + err
    aside = [d for d in os.listdir(out) if d.startswith("previous-")]
    assert len(aside) == 1 and "moved the previous run's files into" in stdout
    kept = snapshot(os.path.join(out, aside[0]))
    assert kept == {name: h for name, h in before.items()}  # every old file, byte for byte
    new_best = read_checkpoint(os.path.join(out, "best.pth"))
    assert new_best["run_id"] != read_checkpoint(os.path.join(out, aside[0], "best.pth"))["run_id"]
    assert [r["epoch"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))] == [0]


def test_fallback_to_older_checkpoint_is_logged_and_metrics_not_duplicated(run, out):
    older, newest = list_checkpoints(out)
    newest_bytes = open(newest, "rb").read()
    _truncate(newest)
    # this run's best.pth holds a result the redone epoch cannot beat: it must stay as it is, although
    # the older checkpoint's own record of the best (set low here) would let any result replace it
    write_checkpoint(older, dict(read_checkpoint(older), best_acc1=-1.0))
    best_path = os.path.join(out, "best.pth")
    write_checkpoint(best_path, dict(read_checkpoint(best_path), acc1=100.5))
    best_before = open(best_path, "rb").read()
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out)
    assert code == 0, stdout + err
    assert f"falling back past {os.path.basename(newest)}" in stdout and "truncated or damaged" in stdout
    assert f"resuming from the older {os.path.basename(older)}" in stdout
    assert "dropped 1 line(s)" in stdout
    records = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1]
    assert len({r["run_id"] for r in records}) == 1
    assert open(newest + ".unreadable", "rb").read() == newest_bytes[: len(newest_bytes) // 2]
    assert open(best_path, "rb").read() == best_before


def test_flipped_bytes_are_refused_by_eval(run, out):
    path = list_checkpoints(out)[-1]
    data = bytearray(open(path, "rb").read())
    start = len(data) // 3
    data[start:start + 4096] = bytes(b ^ 0xFF for b in data[start:start + 4096])
    open(path, "wb").write(bytes(data))
    before = snapshot(out)
    code, stdout, err = run_cli("eval", "-c", run["config"], "--checkpoint", path)
    assert code == 2, stdout + err
    assert path in err and ("is damaged: its content checksum does not match" in err or "damaged" in err)
    assert "Traceback" not in err and snapshot(out) == before


def test_best_of_another_run_is_not_replaced(run, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(os.path.join(run["out"], "best.pth"), fresh / "best.pth")
    before = snapshot(fresh)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", fresh)
    assert code == 2, stdout + err
    assert "best.pth belongs to another run" in err and all(choice in err for choice in CHOICES)
    assert snapshot(fresh) == before


def test_no_auto_resume_in_a_run_folder_is_refused(run, out):
    before = snapshot(out)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--no-auto-resume")
    assert code == 2, stdout + err
    assert "holds checkpoints of a run and train.auto_resume is off" in err and "--start-over" in err
    assert snapshot(out) == before


def test_resume_from_an_older_checkpoint_would_prune_newer_ones(run, out):
    older, newest = list_checkpoints(out)
    before = snapshot(out)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--resume", older)
    assert code == 2, stdout + err
    assert os.path.basename(newest) in err and "would prune or mix with" in err
    assert snapshot(out) == before


def test_resume_from_weights_only_file_with_trust_names_the_real_problem(run, out, tmp_path):
    before = snapshot(out)
    best = os.path.join(out, "best.pth")
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", tmp_path / "new", "--resume", best,
                             "--set", "model.trust_checkpoint=true")
    assert code == 2, stdout + err
    assert "is not a training checkpoint of this trainer" in err and "trust_checkpoint" not in err
    assert snapshot(out) == before


def _corrupt(path):
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
    return "UnidentifiedImageError: cannot identify image file"


def _dangling(path):
    os.unlink(path)
    os.symlink("moved-away.png", path)
    return "dangling link to moved-away.png"


@pytest.mark.parametrize("spoil", [_corrupt, _dangling], ids=["corrupt", "dangling link"])
def test_unreadable_image_fails_before_training(tmp_path, spoil):
    folder = make_image_folder(str(tmp_path / "ds"))
    bad = os.path.join(folder, "val", "cat", "2.png")
    reason = spoil(bad)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder, str(tmp_path / "run"))))
    before = snapshot(folder)
    code, out, err = run_cli("train", "-c", config, env=cli_env(VHEAT_CACHE_DIR=str(tmp_path / "c")))
    assert code == 2, out + err
    assert f"1 of 12 images in {folder}/val cannot be read: {bad} (" in err and reason in err
    assert "data.verify_images=skip" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path / "run") == ["log.txt"]  # no config, checkpoint or metrics written
    assert snapshot(folder) == before


def test_directory_links_back_into_the_dataset_are_not_followed(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"))
    os.symlink("..", os.path.join(folder, "train", "bee", "loop"))  # would relabel ant and cat as bee
    for name in ("up1", "up2"):  # two in one folder: an exponential walk
        os.symlink("..", os.path.join(folder, "val", "cat", name))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder, str(tmp_path / "run"), "train.stop_after_steps=1")))
    before = snapshot(folder)
    code, out, err = run_cli("train", "-c", config, env=cli_env(VHEAT_CACHE_DIR=str(tmp_path / "c")), timeout=120)
    assert code == 0, out + err
    assert "3 classes; 24 train / 12 val images" in out  # as without the links
    assert f"{folder}/train: not following 1 directory link(s) that lead back into the dataset" in out
    assert f"{folder}/val: not following 2 directory link(s)" in out and f"{folder}/val/cat/up1 -> {folder}/val" in out
    assert snapshot(folder) == before


class _RunsCommand:
    """Unpickles as os.system(command): what a malicious checkpoint carries."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


# One process per case: each fails in its argument checks before any work.
def _bad_arguments(run, tmp):
    existing = tmp / "existing.txt"
    existing.write_text("keep me\n")
    text = tmp / "notes.pth"
    text.write_text("these are notes, not weights\n")
    trunc = tmp / "truncated.pth"
    data = open(list_checkpoints(run["out"])[-1], "rb").read()
    trunc.write_bytes(data[: len(data) // 2])
    good = list_checkpoints(run["out"])[-1]
    evil = tmp / "evil.pth"
    torch.save({"model": _RunsCommand(f"touch {tmp / 'pwned'}")}, evil)  # snapshot() would see the file
    convert = ("vheat.downstream.convert",)
    return {
        "output is a file": ((), ("train", "-c", run["config"], "-o", existing),
                             "is an existing file, not a folder"),
        "nan lr": ((), ("train", "-c", run["config"], "-o", tmp / "o1", "--set", "train.base_lr=.nan"),
                   "train.base_lr must be a finite number > 0, got nan"),
        "zero lr": ((), ("train", "-c", run["config"], "-o", tmp / "o2", "--set", "train.base_lr=0"),
                    "train.base_lr must be a finite number > 0"),
        "ema decay 5": ((), ("train", "-c", run["config"], "-o", tmp / "o3", "--set", "train.ema_decay=5"),
                        "train.ema_decay must be a finite number >= 0 and < 1, got 5"),
        "text as checkpoint": ((), ("eval", "-c", run["config"], "--checkpoint", text),
                               f"{text} is not a checkpoint: it holds text starting 'these are no'"),
        "convert truncated": (convert, ("--input", trunc, "--output", tmp / "c1.pth", "--size", "64"),
                              f"cannot read checkpoint {trunc}: a truncated or damaged torch.save file"),
        "convert text": (convert, ("--input", text, "--output", tmp / "c2.pth"),
                         f"{text} is not a checkpoint: it holds text"),
        "convert patch 0": (convert, ("--input", good, "--output", tmp / "c3.pth", "--patch-size", "0"),
                            "patch size must be >= 1 (vHeat uses 4), got 0"),
        "convert huge": (convert, ("--input", good, "--output", tmp / "c4.pth", "--size", "100000"),
                         "target size 100000 needs"),
        "convert 50": (convert, ("--input", good, "--output", tmp / "c5.pth", "--size", "50"),
                       "image size 50 is not a multiple of 8 (patch 4 x 2**1 for 2 stages)"),
        "convert 50 suggests": (convert, ("--input", good, "--output", tmp / "c6.pth", "--size", "50"),
                                "; use 48 or 56\n"),
        "convert 4 suggests": (convert, ("--input", good, "--output", tmp / "c7.pth", "--size", "4"),
                               "would not be integers, so no model of that img_size has them; use 8\n"),
        "output unwritable": ((), ("train", "-c", run["config"], "-o", "/sys/vheat-run"), "output /sys/vheat-run"),
        "json unwritable": ((), ("eval", "-c", run["config"], "--checkpoint", good, "--json", "/sys/vheat.json"),
                            "cannot write /sys/vheat.json: "),
        "checkpoint as config": ((), ("train", "-c", good, "-o", tmp / "o4"),
                                 f"config file {good} is not a YAML config: it holds binary data"),
        "malicious pickle": ((), ("eval", "-c", run["config"], "--checkpoint", evil),
                             f"checkpoint {evil} is refused as unsafe: loading it would call posix.system (module "
                             f"posix can run arbitrary code"),
        "throughput huge": ((), ("throughput", "-c", run["config"], "--img-size", "100000", "--batch-size", "8"),
                            "data.img_size=100000 at batch 8: one input batch alone is 894.1 GiB"),
        "flops huge": ((), ("flops", "-c", run["config"], "--img-size", "200000"),
                       "data.img_size=200000 at batch 1: one input batch alone is 447.0 GiB"),
    }


@pytest.fixture(scope="module")
def bad_argument_results(run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("args")
    cases = _bad_arguments(run, tmp)
    before = snapshot(tmp), snapshot(run["out"])
    # three at a time: each process imports torch (~300 MB), and the machine's memory is shared
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cli, *args, **({"module": module[0]} if module else {}))
                   for name, (module, args, _) in cases.items()}
        results = {name: f.result() for name, f in futures.items()}
    return cases, results, before, (snapshot(tmp), snapshot(run["out"]))


@pytest.mark.parametrize("case", ["output is a file", "nan lr", "zero lr", "ema decay 5", "text as checkpoint",
                                  "convert truncated", "convert text", "convert patch 0", "convert huge",
                                  "convert 50", "convert 50 suggests", "convert 4 suggests", "output unwritable",
                                  "json unwritable", "checkpoint as config", "malicious pickle",
                                  "throughput huge", "flops huge"])
def test_bad_argument_is_one_clear_line(bad_argument_results, case):
    cases, results, before, after = bad_argument_results
    code, stdout, err = results[case]
    assert code == 2, stdout + err
    lines = [line for line in err.splitlines(keepends=True) if line.strip()]
    assert len(lines) == 1 and cases[case][2] in lines[0], err
    assert not stdout.strip() or "model vheat_tiny:" in stdout  # no results printed (train logs its setup)
    assert after == before  # no file created (no run folder, no converted output) or changed


def _val_only(root, source, classes):
    """root/val/<class> copied from ``source`` for the given classes."""
    for c in classes:
        shutil.copytree(os.path.join(source, "val", c), os.path.join(root, "val", c))
    return root


def test_eval_on_a_subset_of_classes_scores_them_by_name(run, tmp_path):
    """Eval of bee + cat alone and of ant alone must add up to the eval of all three (count, hits,
    loss): with labels taken from folder order, bee and cat would be scored as ant and bee."""
    source = make_image_folder(str(tmp_path / "ds"))
    ckpt = list_checkpoints(run["out"])[-1]
    roots = {"all": source, "bee+cat": _val_only(tmp_path / "bc", source, ["bee", "cat"]),
             "ant": _val_only(tmp_path / "a", source, ["ant"])}
    with ThreadPoolExecutor(max_workers=3) as pool:
        # model.num_classes=3: without it a 2-class subset is refused (head shape), so a user sets it
        futures = {name: pool.submit(run_cli, "eval", "-c", run["config"], "--checkpoint", ckpt, "--data", root,
                                     "--json", tmp_path / f"{name}.json", "--set", "model.num_classes=3")
                   for name, root in roots.items()}
        for name, f in futures.items():
            code, out, err = f.result()
            assert code == 0, (name, out + err)
    got = {name: json.loads((tmp_path / f"{name}.json").read_text())["model"] for name in roots}
    parts = [got["bee+cat"], got["ant"]]
    assert sum(r["count"] for r in parts) == got["all"]["count"] == 12
    assert sum(r["acc1"] * r["count"] for r in parts) == pytest.approx(got["all"]["acc1"] * 12)
    assert sum(r["loss"] * r["count"] for r in parts) == pytest.approx(got["all"]["loss"] * 12, rel=1e-5)


def test_eval_on_a_class_the_checkpoint_does_not_know_is_refused(run, tmp_path):
    source = make_image_folder(str(tmp_path / "ds"), classes=("bee", "dog"))
    ckpt = list_checkpoints(run["out"])[-1]
    before = snapshot(tmp_path)
    code, out, err = run_cli("eval", "-c", run["config"], "--checkpoint", ckpt, "--data", source,
                             "--json", tmp_path / "r.json")
    assert code == 2, out + err
    assert err.strip() == (f"vheat: error: {source}/val holds class folder(s) dog that {ckpt} was not trained on "
                           f"(its 3 classes: ant, bee, cat); evaluate on the classes it knows")
    assert snapshot(tmp_path) == before  # no results written


def test_disk_full_is_one_line_and_loses_nothing(run, out):
    """As under ``prlimit --fsize``: the next checkpoint cannot be written."""
    ckpt = list_checkpoints(out)[-1]
    limit = os.path.getsize(ckpt) // 2  # room for the config, metrics and log lines, not a checkpoint
    assert limit > 20000
    before = snapshot(out)
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--epochs", "3",
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert code == 2, stdout + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot write {out}/" in lines[0] and "exceeds the file size limit" in lines[0], err
    assert "No file written before was changed or lost" in lines[0]
    after = snapshot(out)
    assert not [name for name in after if name.endswith(".tmp")]  # no partial file left
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed <= {"metrics.jsonl", "config.yaml"}, changed  # the epoch's line; the config it resumed with
    assert read_jsonl(os.path.join(out, "metrics.jsonl"))[:2] == read_jsonl(os.path.join(run["out"], "metrics.jsonl"))
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--epochs", "3")  # room again: resumes
    assert code == 0 and "resumed from" in stdout, stdout + err
    assert [r["epoch"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))] == [0, 1, 2]


def _fsize_limit(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_log_that_cannot_grow_warns_once_and_the_run_goes_on(run, out):
    """log.txt already at the file size limit, with room for checkpoints: one warning line instead of
    logging's "--- Logging error ---" traceback per line; the run finishes and the log is untouched."""
    limit = 3 * os.path.getsize(list_checkpoints(out)[-1])
    log_path = os.path.join(out, "log.txt")
    with open(log_path, "ab") as f:
        f.write(b"#" * (limit - os.path.getsize(log_path)))
    old_log = open(log_path, "rb").read()
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--epochs", "3",
                                preexec_fn=_fsize_limit(limit))
    assert code == 0, stdout + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vheat: warning: cannot write {log_path}: it exceeds the file "
                                                   f"size limit"), err
    assert "Logging error" not in err and "epoch 3/3:" in stdout and "finished: 18 steps" in stdout
    assert open(log_path, "rb").read() == old_log
    assert [r["epoch"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))] == [0, 1, 2]


def test_an_unwritable_image_check_cache_warns_and_the_run_goes_on(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"))
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder, str(tmp_path / "run"), "train.stop_after_steps=1")))
    before = snapshot(tmp_path)
    code, out, err = run_cli("train", "-c", config, env=cli_env(VHEAT_CACHE_DIR=str(cache)), timeout=120)
    assert code == 0, out + err
    warnings = [line for line in out.splitlines() if "image-check cache" in line]
    assert len(warnings) == 2, out  # one per split
    for line in warnings:
        assert f"cannot write the image-check cache {cache}/image-checks/" in line and "Not a directory" in line
    assert "Traceback" not in err and "stopped at global step 1" in out
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # the dataset and the "cache" unchanged


def test_a_failed_plot_write_is_one_line_and_keeps_the_old_plot(run, out):
    plot = os.path.join(out, "metrics.png")
    open(plot, "wb").write(b"the previous plot")
    before = snapshot(out)
    limit = os.path.getsize(os.path.join(out, "config.yaml")) + 1000  # the config fits, a plot does not
    code, stdout, err = run_cli("train", "-c", run["config"], "-o", out, "--set", "train.plot=true",
                                preexec_fn=_fsize_limit(limit))
    assert code == 2, stdout + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot write {plot}: it exceeds the file size limit" in lines[0], err
    after = snapshot(out)
    assert after["metrics.png"] == before["metrics.png"] and not [n for n in after if n.endswith(".tmp")]
    assert {n for n in before if after.get(n) != before[n]} <= {"config.yaml"}  # train.plot=true recorded


def test_an_unreadable_image_met_by_a_loader_worker_is_one_line(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"))
    bad = os.path.join(folder, "train", "ant", "3.png")
    _corrupt(bad)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder, str(tmp_path / "run"), "data.verify_images=off",
                                                 "data.num_workers=1")))
    before = snapshot(folder)
    code, out, err = run_cli("train", "-c", config, timeout=120)
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vheat: error: cannot read image {bad} (corrupt or not an "
                                                   f"image): cannot identify image file"), err
    assert "DataLoader worker" not in err and "data.verify_images=fail" in lines[0]
    assert snapshot(folder) == before
    assert not list_checkpoints(str(tmp_path / "run"))
