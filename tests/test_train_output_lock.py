"""Two ``vheat train`` runs on one output folder, as a user starts them by mistake: the second is refused
at once in one line and the first finishes exactly as it would have alone."""
import os
import socket
import time

import torch
import yaml

from train_helpers import finish_cli, make_image_folder, start_cli, tiny_config
from vheat.io import read_jsonl
from vheat.train.checkpoint import read_checkpoint
from vheat.train.output_lock import LOCK_FILE

# Differ between any two runs by design: the lineage id (uuid4), the checksum over content that
# holds it, the wall-clock time of a metrics line and the output path in the stored config.
PER_RUN = {"run_id", "payload_sha256", "time", "output"}


def same_content(a, b, where=""):
    """Tensors bitwise, everything else by value, except the PER_RUN keys; returns the first difference."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
        return None if ok else where
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - PER_RUN != set(b) - PER_RUN:
            return f"{where}: keys {sorted(set(a) ^ set(b))}"
        return next((d for k in a if k not in PER_RUN for d in [same_content(a[k], b[k], f"{where}.{k}")] if d), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: lengths {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) for d in [same_content(x, y, f"{where}[{i}]")] if d),
                    None)
    return None if a == b else f"{where}: {a!r} != {b!r}"


def run_files(folder):
    return {name: os.path.join(folder, name) for name in os.listdir(folder) if name != "log.txt"}


def test_second_run_on_a_busy_output_is_refused_and_the_first_is_untouched(tmp_path):
    folder = make_image_folder(str(tmp_path / "ds"))
    # long enough (8 epochs, a checkpoint every 2 steps) that run 1 is still training while run 2 starts
    cfg = tiny_config(folder, str(tmp_path / "unused"), "train.epochs=8", "train.save_every_steps=2",
                      "train.deterministic=true", "train.threads=1")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    busy, solo = tmp_path / "busy", tmp_path / "solo"

    # Run 2 imports torch and vheat first and waits for a go file, so that it reaches the folder within
    # milliseconds of the go while run 1 trains, however slow imports are on a loaded machine.
    go = tmp_path / "go"
    waiting = (f"import os, sys, time; from vheat.cli.main import main\n"
               f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
               f"main(sys.argv[1:])")
    second = start_cli("train", "-c", config, "-o", busy, "--set", "train.seed=1", module=None, code=waiting)
    first = start_cli("train", "-c", config, "-o", busy)
    alone = start_cli("train", "-c", config, "-o", solo)  # the reference, same seed, its own folder
    lock = busy / LOCK_FILE
    deadline = time.monotonic() + 240
    while not (lock.exists() and f"pid {first.pid} " in lock.read_text()):
        assert first.poll() is None and time.monotonic() < deadline, "run 1 never took the lock"
        time.sleep(0.05)
    go.touch()
    code, out, err = finish_cli(second)
    assert first.poll() is None, "run 1 finished before run 2 was refused: nothing was tested"
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"output folder {busy} is in use by another training run (pid {first.pid} on host " \
        f"{socket.gethostname()}, started " in lines[0] and "write to another --output" in lines[0], err
    assert not out.strip()

    for proc in (first, alone):
        code, out, err = finish_cli(proc)
        assert code == 0, out + err
    got, want = run_files(busy), run_files(solo)
    # every file of run 1 as a solo run writes it (run 2 left nothing), and no lock file left behind
    assert sorted(got) == sorted(want) and "best.pth" in got and "metrics.jsonl" in got
    for name in sorted(got):
        if name.endswith(".pth"):
            diff = same_content(read_checkpoint(got[name]), read_checkpoint(want[name]), name)
        elif name == "metrics.jsonl":
            diff = same_content(read_jsonl(got[name]), read_jsonl(want[name]), name)
        else:
            assert name == "config.yaml", name
            diff = same_content(yaml.safe_load(open(got[name])), yaml.safe_load(open(want[name])), name)
        assert diff is None, diff
    assert len({r["run_id"] for r in read_jsonl(got["metrics.jsonl"])}) == 1  # one run's lines only
