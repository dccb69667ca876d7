"""vheat-kernels benchmark suite: kernels, whole models, resolution scaling, memory, a per-op profile.

    python -m benchmarks                 # full run (the slowest; run time in docs/benchmarks.md); writes docs/benchmarks.md
    python -m benchmarks --quick         # smoke run (T only, small batches, short timing)
    python -m benchmarks --only kernel,memory   # sections: kernel, model, resolution, memory, profile
    python -m benchmarks --threads 1 --only model   # whole models only (file tag: model)

An AVX2-only CPU is approximated on an AVX-512 one by prefixing VHEAT_CPU_ISA=avx2
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 (the JSON and the
tables say which were set; ONNX Runtime has no such switch).

Writes benchmarks/results/<tag>_<machine class>.json (tag: full / quick, or the sections run,
e.g. model; machine class: CPU model and ISA, machine.machine_class) and PNG plots beside it,
so that runs on different CPUs sit side by side; prints the section tables, each headed by the
CPU and ISA, and, last, the table of the issue's targets checked against this run.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import torch

from vheat.io import atomic_write_json

from .machine import git_revision, machine_class, machine_info, machine_label, use_own_inductor_cache
from .report import SECTION_TABLES, TITLES, hco_share, targets, targets_table, write_docs
from .suite import kernel, memory, model, plots, profile, resolution
from .suite.deployment import DEPLOYMENT_PEERS
from .suite.measure import copy_bandwidth_gbs, gemm_peak_gflops, steady_allocator

SECTIONS = {"kernel": kernel.run, "model": model.run, "resolution": resolution.run, "memory": memory.run,
            "profile": profile.run}
TIMM_MODELS = ["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "deit_small_patch16_224", "convnext_tiny"]

FULL = dict(
    dtypes=["float32", "bfloat16"], families=["T/S", "B"], kernel_resolutions=[224, 512, 1024], kernel_batch=8,
    # bf16 and vHeat-B planes at 224 only: the matmul-DCT baseline grows as side^3 (and bf16 GEMMs are slow on CPU)
    kernel_max_res={"bfloat16": 224, "B": 224},
    min_time=0.2, img_size=224, num_classes=1000, modes=["infer", "train"], batch_sizes=[1, 16], train_batch_sizes=[1, 4],
    model_reps=5, vheat_models=["vheat_tiny", "vheat_small", "vheat_base"], timm_models=TIMM_MODELS,
    # training batches of the 50-90M-parameter models: 1 only (a batch-4 training step of the
    # official vHeat-B costs seconds on a CPU); every model runs inference at batch 16
    max_batch={}, max_train_batch={"vheat_small": 1, "vheat_base": 1, "swin_small_patch4_window7_224": 1},
    model_peers=list(DEPLOYMENT_PEERS),  # inference: torch.compile of the official model, ONNX Runtime
    resolutions=[224, 512, 768, 1024],
    resolution_models=["vheat_tiny", "swin_tiny_patch4_window7_224", "deit_small_patch16_224"],
    memory_img_size=224, memory_batch=8,
)
QUICK = dict(
    FULL, families=["T/S"], kernel_resolutions=[224], kernel_batch=2, min_time=0.02, batch_sizes=[2], train_batch_sizes=[2],
    model_reps=2, kernel_max_res={},
    vheat_models=["vheat_tiny"], timm_models=["swin_tiny_patch4_window7_224", "deit_small_patch16_224"],
    max_batch={}, max_train_batch={}, resolutions=[224, 384], memory_batch=2,
)


def _ints(text: str):
    return [int(v) for v in text.split(",") if v]


def _names(text: str):
    return [v for v in text.split(",") if v]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: vHeat-T only, small batches, short timing")
    p.add_argument("--only", type=_names, default=list(SECTIONS), help="comma list of: " + ",".join(SECTIONS))
    p.add_argument("--out-dir", default="benchmarks/results", help="JSON and PNG go here")
    p.add_argument("--tag", default=None, help="file stem of the outputs (default: full / quick)")
    p.add_argument("--docs", default=None, help="markdown report to write (default: docs/benchmarks.md on full runs)")
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own); 1 avoids OpenMP stalls on an oversubscribed machine")
    # Overrides of the preset (tiny sizes for tests, or a narrower run).
    p.add_argument("--min-time", type=float)
    p.add_argument("--dtypes", type=_names)
    p.add_argument("--kernel-resolutions", type=_ints)
    p.add_argument("--kernel-batch", type=int)
    p.add_argument("--img-size", type=int, help="model section input size")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--batch-sizes", type=_ints, help="model section batch sizes (inference and training)")
    p.add_argument("--vheat-models", type=_names)
    p.add_argument("--timm-models", type=_names)
    p.add_argument("--timer", choices=["auto", "wall", "thread"],
                   help="model section clock; auto (default): thread CPU time with --threads 1, wall clock otherwise")
    p.add_argument("--model-peers", type=_names,
                   help="model section's deployment peers, comma list of " + ",".join(DEPLOYMENT_PEERS) + " or 'none'")
    p.add_argument("--resolutions", type=_ints)
    p.add_argument("--resolution-models", type=_names)
    p.add_argument("--memory-img-size", type=int)
    p.add_argument("--memory-batch", type=int)
    args = p.parse_args(argv)
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {','.join(SECTIONS)}")
    cfg = dict(QUICK if args.quick else FULL)
    if args.model_peers is not None:
        args.model_peers = [] if args.model_peers == ["none"] else args.model_peers
        bad = [v for v in args.model_peers if v not in DEPLOYMENT_PEERS]
        if bad:
            p.error(f"--model-peers: unknown peer(s) {bad}; choose from {','.join(DEPLOYMENT_PEERS)} or none")
    if args.batch_sizes is not None:
        cfg["train_batch_sizes"] = args.batch_sizes
    for key in ("min_time", "dtypes", "kernel_resolutions", "kernel_batch", "img_size", "num_classes", "batch_sizes",
                "vheat_models", "timm_models", "model_peers", "timer", "resolutions", "resolution_models", "memory_img_size", "memory_batch"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for key in ("img_size", "memory_img_size", *cfg["resolutions"]):
        size = cfg[key] if isinstance(key, str) else key
        if size % 32:
            p.error(f"input sizes must be multiples of 32 (vHeat downsamples 32x); got {size}")
    return args, cfg


def default_tag(args) -> str:
    """quick / full, or the sections run (e.g. 'model') when --only narrowed a full run."""
    if args.quick:
        return "quick"
    return "full" if list(args.only) == list(SECTIONS) else "-".join(args.only)


def isa_note(machine) -> str:
    """How the ISA was chosen, for the JSON and the printed tables."""
    forced = machine.get("isa_forced_by", {})
    if not forced:
        return f"not forced: every library ran the host's widest ISA ({machine['host_isa']})"
    note = "forced by " + " ".join(f"{k}={v}" for k, v in forced.items()) + f" on an {machine['host_isa']} host"
    note += "; ONNX Runtime's MLAS has no such switch and ran the host's ISA"
    missing = [k for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k not in forced]
    if machine.get("isa_forced") and missing:
        note += f"; NOT forced: {', '.join(missing)} (those libraries ran the host's ISA)"
    return note


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, cfg = parse_args(argv)
    tag = args.tag or default_tag(args)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    label = machine_label(machine)
    print(f"machine: {label}; ISA {isa_note(machine)}", file=sys.stderr)
    use_own_inductor_cache(machine)  # before anything compiles
    # One file per machine class: a run on another CPU (or with the ISA forced) never overwrites this one.
    stem = f"{tag}_{machine_class(machine)}"
    steady = steady_allocator()
    revision = git_revision()  # before the run writes its own outputs (tracked plots and JSON)
    load_before = os.getloadavg()
    start = time.time()
    peaks = {"gemm_gflops": gemm_peak_gflops(), "copy_gbs": copy_bandwidth_gbs()}
    print(f"peaks: GEMM {peaks['gemm_gflops']:.1f} GFLOP/s, copy {peaks['copy_gbs']:.1f} GB/s", file=sys.stderr)
    results = {}
    for name in args.only:
        t0 = time.time()
        torch.manual_seed(0)
        results[name] = SECTIONS[name](cfg, peaks)
        results[name]["wall_s"] = time.time() - t0
    saved_plots = {}
    if "resolution" in results:
        saved_plots["resolution"] = plots.resolution_plot(results["resolution"], os.path.join(args.out_dir, f"{stem}_resolution.png"))
    if "kernel" in results:
        saved_plots["kernel"] = plots.kernel_plot(results["kernel"], os.path.join(args.out_dir, f"{stem}_kernel_speedup.png"))
    env = "".join(f"{k}={v} " for k, v in machine["isa_forced_by"].items())
    payload = {
        "benchmark": "vheat-kernels suite", "command": env + "python -m benchmarks " + shlex.join(argv),
        "git": revision, "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "wall_s": time.time() - start,
        "machine": dict(machine, machine_class=machine_class(machine), isa_note=isa_note(machine), cpu_count=os.cpu_count(),
                        load_avg_before=load_before, load_avg_after=os.getloadavg(), steady_allocator=steady),
        "peaks": peaks, "config": cfg, "results": results, "plots": saved_plots,
        "targets": targets(results, peaks),
    }
    json_path = os.path.join(args.out_dir, f"{stem}.json")
    atomic_write_json(json_path, payload, indent=2)
    # The report (and the README's headline block) only from a full run of every section: a
    # partial or quick run would replace the whole report with a part of it.
    full_run = not args.quick and tag == "full" and list(args.only) == list(SECTIONS)
    docs = args.docs or ("docs/benchmarks.md" if full_run else None)
    if docs and not args.no_docs:  # a full run also refreshes the README's headline
        write_docs(json_path, docs, readme="README.md" if full_run and not args.docs else None)
    threads = payload["machine"]["threads"]
    load = f"1-min load {load_before[0]:.1f} before, {payload['machine']['load_avg_after'][0]:.1f} after"
    for name in results:
        print(f"\n## {TITLES[name]} ({label}, {threads} threads; {load})\n\n{SECTION_TABLES[name](results[name])}")
    if hco_share(results):
        print("\n" + hco_share(results))
    print(f"\nISA: {payload['machine']['isa_note']}")
    print(f"JSON: {json_path}" + (f"; report: {docs}" if docs and not args.no_docs else ""))
    print(f"\n## Targets ({label}, {threads} threads)\n")
    print(targets_table(payload["targets"]))
    return payload


if __name__ == "__main__":
    main()
