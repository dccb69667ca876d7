"""Run setup shared by train, eval and throughput: device, process group, threads, seeds, logging.

:func:`run_context` sets them up once and gives the caller's settings back afterwards, so
library callers (and tests sharing one process) keep their own thread count and flags.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch

from . import distributed as du
from .config import ConfigError
from .log_file import LogFile

T = TypeVar("T")


def resolve_device(cfg: dict) -> torch.device:
    want = cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu (or auto)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def setup_logging(output_dir: Optional[str]) -> None:
    """Rank 0 logs INFO to stdout (and output/log.txt, while it can be written); other ranks only warnings."""
    root = logging.getLogger("vheat")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate = False
    root.setLevel(logging.INFO if du.is_main() else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if output_dir and du.is_main():
        os.makedirs(output_dir, exist_ok=True)
        fh = LogFile(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(fmt)
        root.addHandler(fh)


def available_memory_bytes() -> int:
    """Memory the system can still give this process: MemAvailable on Linux (free pages plus
    reclaimable cache), else free pages, else no limit."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def check_input_fits(batch_size: int, img_size: int, what: str = "data.img_size") -> None:
    """A float32 batch of ``img_size`` images must fit a quarter of the available memory (the network's
    feature maps of that size come on top): a one-line error instead of an allocation failure."""
    need, have = 4 * 3 * batch_size * img_size**2, available_memory_bytes()
    if 4 * need > have:
        raise ConfigError(f"{what}={img_size} at batch {batch_size}: one input batch alone is {need / 2**30:.1f} GiB, "
                          f"more than a quarter of the {have / 2**30:.1f} GiB of memory available (ImageNet models "
                          f"use 224-384)")


def on_main(fn: Callable[[], T]) -> T:
    """Rank 0 runs ``fn`` (file checks, dataset export, every write to the output folder); every rank gets its
    answer or its error. An error rank 0 kept to itself (a full disk) would leave the other ranks waiting at the
    next collective until the process group times out (30 minutes)."""
    if not du.is_distributed():
        return fn()
    answer: Any = None
    if du.is_main():
        try:
            answer = ("ok", fn())
        except ValueError as exc:  # ConfigError, DatasetError, CheckpointFormatError
            answer = ("error", type(exc), str(exc))
    answer = du.broadcast_object(answer)
    if answer[0] == "error":
        raise answer[1](answer[2])
    return answer[1]


@contextlib.contextmanager
def run_context(cfg: dict, deterministic: bool = False, output_dir: Optional[str] = None) -> Iterator[torch.device]:
    """Device, process group (torchrun), train.threads, deterministic algorithms and logging for one
    command; yields the device. A process group a caller already owns is left to it."""
    device = resolve_device(cfg)
    joined = not du.is_distributed() and du.init_distributed(device.type)
    threads, det, bench = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.backends.cudnn.benchmark
    try:
        if cfg["train"]["threads"]:
            torch.set_num_threads(cfg["train"]["threads"])
        if deterministic:
            # The one environment write in the package, and only for a deterministic run:
            # cuBLAS reads its workspace setting from the environment only (torch has no API
            # for it) and deterministic GEMMs require it; a value the user set is kept.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
        setup_logging(output_dir)
        yield device
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        torch.backends.cudnn.benchmark = bench
        if joined:
            du.cleanup()
