"""``vheat`` command line: train, eval, throughput and flops, driven by YAML configs.

    python -m vheat train --config demo_digits
    python -m vheat train -c vheat_tiny --data /data/imagenet --set train.base_lr=1e-3
    torchrun --nproc_per_node 8 -m vheat train -c vheat_tiny --data /data/imagenet
    python -m vheat eval -c vheat_tiny --data /data/imagenet --checkpoint vHeat_tiny.pth
    python -m vheat throughput -c vheat_tiny --batch-size 64
    python -m vheat flops -c vheat_base
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from vheat.configs import resolve_config_path


def _add_common(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("-c", "--config", required=config_required,
                   help="YAML config: a path or a name shipped in vheat/configs (vheat_tiny, demo_digits, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                   help="override config entries, e.g. --set train.base_lr=1e-3 data.batch_size=64")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides as alternating keys and values (Swin / official style)")
    p.add_argument("--data", help="dataset root with train/ and val/ (sets data.root)")
    p.add_argument("--backend", help="HCO backend: auto, reference, fft, cpu, triton, cuda (model.hco_backend)")
    p.add_argument("--device", help="auto, cpu or cuda (train.device)")
    p.add_argument("--batch-size", type=int, help="per-process batch size (data.batch_size)")
    p.add_argument("--progress", choices=("auto", "on", "off"),
                   help="progress bars: auto (only when stderr is a terminal; log lines otherwise), on or off "
                        "(train.progress; this flag wins over the config file and --set)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vheat", description="Train, evaluate and benchmark vHeat models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or fine-tune) a model; resumes automatically")
    _add_common(p)
    p.add_argument("-o", "--output", help="output folder for checkpoints, metrics and plots (output)")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--resume", help="resume from this checkpoint (default: newest complete one in the output)")
    p.add_argument("--no-auto-resume", action="store_true",
                   help="do not resume from the output folder's checkpoints (a folder that holds some is refused)")
    p.add_argument("--start-over", action="store_true",
                   help="move the output folder's run files (checkpoints, best.pth, metrics) into previous-<time>/ "
                        "and train from scratch")
    p.add_argument("--pretrained", help="start from these weights (official or ours): model.pretrained")

    p = sub.add_parser("eval", help="top-1 / top-5 / loss of a checkpoint's model and EMA weights")
    _add_common(p)
    p.add_argument("--checkpoint", help="checkpoint to evaluate (official {'model','model_ema'} or ours)")
    p.add_argument("--json", help="also write the results to this JSON file")

    p = sub.add_parser("throughput", help="images/s and peak memory on random inputs")
    _add_common(p)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--train", action="store_true", help="time training steps instead of inference")
    p.add_argument("--img-size", type=int, help="data.img_size")
    p.add_argument("--json", help="also write the result to this JSON file")

    p = sub.add_parser("flops", help="GFLOPs (fvcore, official counting, as python -m vheat.flops) and parameters")
    _add_common(p)
    p.add_argument("--img-size", type=int, help="data.img_size")
    p.add_argument("--infer-mode", action="store_true", help="count the model after infer_init() folding")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    from vheat.train.config import ConfigError

    items = [item for group in args.overrides for item in group]
    if len(args.opts) % 2:
        raise ConfigError(f"--opts needs KEY VALUE pairs, got an odd number of items: {args.opts}")
    items += [f"{k}={v}" for k, v in zip(args.opts[::2], args.opts[1::2])]
    flags = {"data": "data.root", "backend": "model.hco_backend", "device": "train.device",
             "batch_size": "data.batch_size", "output": "output", "epochs": "train.epochs",
             "pretrained": "model.pretrained", "img_size": "data.img_size", "progress": "train.progress"}
    for attr, key in flags.items():
        value = getattr(args, attr, None)
        if value is not None:
            items.append(f"{key}={value}")
    if getattr(args, "no_auto_resume", False):
        items.append("train.auto_resume=false")
    if args.data is not None:
        items.append("data.dataset=imagefolder")
    return items


def _write_json(path: Optional[str], obj: dict) -> None:
    if path:
        from vheat.io import atomic_write_text

        atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from vheat.train import distributed as du
    from vheat.train.config import ConfigError, load_config

    cfg = load_config(resolve_config_path(args.config) if args.config else None, _overrides(args))
    if getattr(args, "json", None):
        from vheat.io import check_writable

        check_writable(args.json)

    if args.command == "train":
        from vheat.train.trainer import train

        summary = train(cfg, resume=args.resume, start_over=args.start_over)
        if du.env_rank() != 0:
            return 0
        if summary["status"] == "stopped":
            print(f"stopped at global step {summary['global_step']}; checkpoint {summary['checkpoint']}")
            return 0
        line = f"finished: {summary['global_step']} steps, best top-1 {summary['best_acc1']:.2f}%"
        if "val" in summary:
            v = summary["val"]
            line += f"; final top-1 {v['acc1']:.2f}% top-5 {v['acc5']:.2f}% on {v['count']} held-out images"
        if "ema_val" in summary:
            line += f" (EMA top-1 {summary['ema_val']['acc1']:.2f}%)"
        print(line + f"; outputs in {summary['output']}")
        return 0

    if args.command == "eval":
        from vheat.train.evaluate import evaluate_checkpoint

        results = evaluate_checkpoint(cfg, args.checkpoint)
        if du.env_rank() == 0:
            for name in ("model", "ema"):
                if name in results:
                    r = results[name]
                    print(f"{name}: top-1 {r['acc1']:.2f}%  top-5 {r['acc5']:.2f}%  loss {r['loss']:.4f}  "
                          f"({r['count']} images)")
            _write_json(args.json, results)
        return 0

    if args.command == "throughput":
        from vheat.train.progress import show_bars
        from vheat.train.throughput import measure_throughput

        r = measure_throughput(cfg, cfg["data"]["batch_size"], args.warmup, args.iters, args.train,
                               progress=show_bars(cfg))
        print(f"{r['model']} {r['mode']} on {r['device']} ({r['threads']} threads), batch {r['batch_size']}, "
              f"{r['img_size']}px, {r['amp']}: {r['images_per_s']:.1f} images/s; peak memory "
              f"{r['peak_memory_bytes'] / 2**20:.1f} MiB ({r['peak_memory_kind']})")
        _write_json(args.json, r)
        return 0

    if args.command == "flops":
        from vheat.train.runtime import check_input_fits

        check_input_fits(1, cfg["data"]["img_size"])
        from vheat.flops import model_figures
        from vheat.train.model_factory import build_model

        model = build_model(cfg, cfg["model"]["num_classes"] or 1000)
        if args.infer_mode:
            if not hasattr(model, "set_infer_mode"):
                raise ConfigError(f"{cfg['model']['name']} has no infer mode (k_exp folding)")
            model.set_infer_mode(True)
        r = model_figures(model, cfg["data"]["img_size"])
        print(f"{cfg['model']['name']} at {cfg['data']['img_size']}px{' (infer mode)' if args.infer_mode else ''}: "
              f"{r['flops'] / 1e9:.4g} GFLOPs, {r['params'] / 1e6:.3f} M params ({r['params']:,}"
              + (f", folded k_exp {r['k_exp_params']:,} of them)" if args.infer_mode else ")"))
        return 0
    raise AssertionError(args.command)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from vheat.data.folders import DatasetError
    from vheat.checkpoint_io import CheckpointFormatError
    from vheat.io import OutputWriteError
    from vheat.train.config import ConfigError

    from vheat_kernels import BackendUnavailableError

    try:
        sys.exit(run(argv))
    except (ConfigError, DatasetError, CheckpointFormatError, BackendUnavailableError, OutputWriteError) as exc:
        if os.environ.get("VHEAT_DEBUG"):
            raise
        print(f"vheat: error: {exc}", file=sys.stderr)
        sys.exit(2)
