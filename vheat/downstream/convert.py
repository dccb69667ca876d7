"""Fit a vHeat classification checkpoint's freq_embed grids to a downstream training size.

Replaces the official ``classification/interpolate4downstream.py`` (whose option names
``--pt_pth --tg_pth --pt_size --tg_size`` are accepted too)::

    python -m vheat.downstream.convert --input vheat_tiny.pth --output vheat_tiny_512.pth --size 512
    python -m vheat.downstream.convert --input vheat_tiny.pth --output out.pth --size 800 --mode interpolate

Differences from the official script: any number of stages, both ``model`` and
``model_ema`` (or a bare state_dict), zero-padding (official) or bicubic interpolation, a
refusal of target sizes whose stage grids would not be exact (the official integer division
silently produced grids that no model of that ``img_size`` has), and an atomic write.
Every other entry of the checkpoint is kept as it is.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..checkpoint_io import CheckpointFormatError, read_checkpoint, write_checkpoint
from ..io import atomic_torch_save
from ..train.runtime import available_memory_bytes
from .freq_embed import FIT_MODES, fit_freq_embed

FREQ_KEY = re.compile(r"^(?P<prefix>.*?)freq_embed\.(?P<stage>\d+)$")
DEFAULT_KEYS = ("model", "model_ema")


class ConversionError(ValueError):
    """The requested conversion is impossible or would not be exact."""


def check_sizes(img_size: int, patch_size: int) -> None:
    if img_size < 1:
        raise ConversionError(f"image size must be positive, got {img_size}")
    if patch_size < 1:
        raise ConversionError(f"patch size must be >= 1 (vHeat uses 4), got {patch_size}")


def stage_grids(img_size: int, num_stages: int, patch_size: int = 4) -> List[int]:
    """Each stage's freq_embed side for ``img_size``: img_size / patch / 2**i, required to be exact."""
    check_sizes(img_size, patch_size)
    step = patch_size * 2 ** (num_stages - 1)
    if img_size % step:
        lower = img_size - img_size % step
        nearest = " or ".join(str(s) for s in (lower, lower + step) if s >= step)  # only sizes this check accepts
        raise ConversionError(
            f"image size {img_size} is not a multiple of {step} (patch {patch_size} x 2**{num_stages - 1} for "
            f"{num_stages} stages): stage grids img_size/{patch_size}/2**i would not be integers, so no model "
            f"of that img_size has them; use {nearest}"
        )
    return [img_size // patch_size // 2**i for i in range(num_stages)]


def check_fits_in_memory(shapes: Mapping[str, tuple], element_size: int, size: int) -> None:
    """The fitted freq_embed tensors (and the copies converting and saving make) must fit in memory."""
    need = sum(math.prod(s) for s in shapes.values()) * element_size
    have = available_memory_bytes()
    if 3 * need > have:
        first = next(iter(shapes.items()))
        raise ConversionError(
            f"target size {size} needs {need / 2**30:.1f} GiB of freq_embed tensors ({first[0]}: {list(first[1])}, ...), "
            f"more than a third of the {have / 2**30:.1f} GiB of memory available; downstream sizes are typically "
            f"512-1344 px")


def _freq_entries(sd: Mapping[str, torch.Tensor]) -> Dict[int, str]:
    found: Dict[int, str] = {}
    for key in sd:
        m = FREQ_KEY.match(key)
        if m:
            found[int(m.group("stage"))] = key
    if not found:
        raise CheckpointFormatError("no freq_embed.{i} entries: not a train-layout vHeat state_dict")
    if sorted(found) != list(range(len(found))):
        raise CheckpointFormatError(f"freq_embed stages {sorted(found)} are not 0..n-1")
    return found


def convert_state_dict(
    sd: Mapping[str, torch.Tensor],
    size: int,
    mode: str = "pad",
    source_size: Optional[int] = None,
    patch_size: int = 4,
) -> Tuple[Dict[str, torch.Tensor], List[Tuple[str, tuple, tuple]]]:
    """Returns the state_dict with every freq_embed fitted to ``size``, and (key, old, new) shapes."""
    if mode not in FIT_MODES:
        raise ConversionError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    if any(k.endswith(".op.k_exp") for k in sd):
        raise CheckpointFormatError(
            "infer-mode layout (folded k_exp at the training resolution): convert the train-layout checkpoint "
            "(freq_embed, to_k) instead"
        )
    keys = _freq_entries(sd)
    n = len(keys)
    targets = stage_grids(size, n, patch_size)
    check_fits_in_memory({keys[i]: (targets[i], targets[i], *sd[keys[i]].shape[2:]) for i in range(n)},
                         sd[keys[0]].element_size(), size)
    sources = [tuple(sd[keys[i]].shape[:2]) for i in range(n)]
    if source_size is not None:
        expect = stage_grids(source_size, n, patch_size)
        if [s for s in sources] != [(e, e) for e in expect]:
            raise ConversionError(
                f"the checkpoint's freq_embed grids {sources} do not belong to source size {source_size} "
                f"(expected {[(e, e) for e in expect]})"
            )
    out = dict(sd)
    report = []
    for i in range(n):
        key = keys[i]
        old = sd[key]
        try:
            new = fit_freq_embed(old, (targets[i], targets[i]), mode=mode, name=key)
        except ValueError as exc:
            raise ConversionError(str(exc)) from None
        out[key] = new
        report.append((key, tuple(old.shape), tuple(new.shape)))
    return out, report


def convert_checkpoint(
    checkpoint: Any,
    size: int,
    mode: str = "pad",
    keys: Optional[Sequence[str]] = None,
    source_size: Optional[int] = None,
    patch_size: int = 4,
) -> Tuple[Any, Dict[str, list]]:
    """Converts ``checkpoint[k]`` for each k in ``keys`` (default: 'model' and 'model_ema' where present;
    a bare state_dict is converted as a whole). Returns the new checkpoint and a report per key."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        if keys:
            raise CheckpointFormatError(f"a bare state_dict has no entries {list(keys)}")
        sd, report = convert_state_dict(checkpoint, size, mode, source_size, patch_size)
        return sd, {"<state_dict>": report}
    wanted = list(keys) if keys else [k for k in DEFAULT_KEYS if k in checkpoint]
    if not wanted:
        raise CheckpointFormatError(
            f"checkpoint has none of {list(DEFAULT_KEYS)}; its entries are {sorted(map(str, checkpoint))[:10]} "
            "(pass --keys)"
        )
    missing = [k for k in wanted if k not in checkpoint]
    if missing:
        raise CheckpointFormatError(f"checkpoint has no entries {missing}; it has {sorted(map(str, checkpoint))[:10]}")
    out = dict(checkpoint)
    reports = {}
    for k in wanted:
        if not isinstance(checkpoint[k], Mapping):
            raise CheckpointFormatError(f"checkpoint[{k!r}] is not a state_dict")
        out[k], reports[k] = convert_state_dict(checkpoint[k], size, mode, source_size, patch_size)
    return out, reports


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vheat.downstream.convert",
        description="Fit a vHeat classification checkpoint's freq_embed to a downstream image size "
        "(replaces the official interpolate4downstream.py).",
    )
    p.add_argument("--input", "--pt_pth", dest="input", required=True, help="classification checkpoint (.pth)")
    p.add_argument("--output", "--tg_pth", dest="output", required=True, help="where to write the converted checkpoint")
    p.add_argument("--size", "--tg_size", dest="size", type=int, default=512,
                   help="downstream img_size (the backbone's img_size; default 512, official)")
    p.add_argument("--source-size", "--pt_size", dest="source_size", type=int, default=None,
                   help="pretraining size, checked against the checkpoint's grids (default: not checked)")
    p.add_argument("--mode", choices=FIT_MODES, default="pad",
                   help="pad: zero-pad bottom/right (official); interpolate: bicubic resize")
    p.add_argument("--keys", nargs="+", default=None,
                   help="checkpoint entries to convert (default: model and model_ema where present)")
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled non-tensor objects (official checkpoints hold a yacs config)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if os.path.exists(args.output) and not args.force:
            raise ConversionError(f"{args.output} exists; pass --force to overwrite it")
        if os.path.isdir(args.output):
            raise ConversionError(f"--output {args.output} is a folder; give a file path")
        # before the input is read; the multiple a size must be depends on the checkpoint's stage count
        check_sizes(args.size, args.patch_size)
        ckpt = read_checkpoint(args.input, allow_pickle=args.trust_checkpoint)
        out, reports = convert_checkpoint(ckpt, args.size, args.mode, args.keys, args.source_size, args.patch_size)
        if isinstance(out, Mapping) and all(isinstance(v, torch.Tensor) for v in out.values()):
            atomic_torch_save(out, args.output)  # a bare state_dict stays bare (no checksum entry)
        else:
            write_checkpoint(args.output, out)
    except (ValueError, OSError) as exc:  # ConversionError / CheckpointFormatError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for entry, report in reports.items():
        for key, old, new in report:
            print(f"{entry}: {key} {list(old)} -> {list(new)} ({args.mode})")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
