"""Inference (or training-step) throughput in images/s and peak memory, after a warm-up."""
from __future__ import annotations

import contextlib
import resource
import sys
import time

import torch
from tqdm import tqdm

from .config import ConfigError
from .model_factory import build_model
from .recipe import amp_dtype
from .runtime import check_input_fits, run_context


def _peak_rss_bytes() -> int:
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_throughput(cfg: dict, batch_size: int, warmup: int = 5, iters: int = 20, train: bool = False,
                       num_classes: int = 1000, progress: bool = True) -> dict:
    """Times ``iters`` forward passes (forward + backward + step with ``train``) on random images."""
    if warmup < 0 or iters < 1 or batch_size < 1:
        raise ConfigError("throughput needs batch_size >= 1, iters >= 1 and warmup >= 0")
    t = cfg["train"]
    size = cfg["data"]["img_size"]
    check_input_fits(batch_size, size)
    num_classes = cfg["model"]["num_classes"] or num_classes
    with run_context(cfg) as device:
        amp = amp_dtype(cfg, device)
        model = build_model(cfg, num_classes).to(device)
        fmt = torch.channels_last if t["channels_last"] else torch.contiguous_format
        model.to(memory_format=fmt)
        images = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
        target = torch.randint(0, num_classes, (batch_size,), device=device)
        fwd = torch.compile(model, dynamic=False) if t["compile"] else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6) if train else None
        autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        model.train(train)

        def step():
            if train:
                with autocast():
                    loss = torch.nn.functional.cross_entropy(fwd(images), target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode(), autocast():
                    fwd(images)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        rss_before = _peak_rss_bytes()
        for _ in tqdm(range(warmup), desc="warm-up", leave=False, disable=not progress):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in tqdm(range(iters), desc="timing", leave=False, disable=not progress):
            step()
        sync()
        elapsed = time.perf_counter() - start
        threads = torch.get_num_threads()
    result = {"model": cfg["model"]["name"], "mode": "train" if train else "inference", "device": str(device),
              "batch_size": batch_size, "img_size": size, "iters": iters, "warmup": warmup,
              "amp": str(amp).replace("torch.", "") if amp else "fp32", "seconds": elapsed,
              "images_per_s": batch_size * iters / elapsed, "threads": threads,
              "hco_backend": cfg["model"]["hco_backend"]}
    if device.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        result["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_memory_bytes"] = _peak_rss_bytes()
        result["peak_memory_kind"] = "process peak RSS (getrusage ru_maxrss)"
        result["peak_rss_before_bytes"] = rss_before
    return result
