"""Model section: whole-model inference throughput and training step time, all candidates interleaved.

vHeat runs three ways on the same weights (models.candidates): ours on the fused HCO, the
official code (the targets' baseline), and ours with the official matmul-DCT HCO. Inference
adds what a CPU user would deploy instead (deployment.py, cfg["model_peers"]): the official
model under torch.compile, and ONNX Runtime on exports of the official model and of ours.
Every vHeat inference candidate's output on the section's input is checked against our eager
model's before timing (max relative difference in the row; a row off by more than
deployment.MAX_REL_DIFF fails loudly and is not timed).
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

from . import deployment, models
from .measure import time_paired
from .official_vheat import OfficialVHeat

# Which vHeat size a timm model's row is compared with (the targets: vHeat-T vs Swin-T).
PEER_SIZE = {"Swin-T": "vHeat-T", "ConvNeXt-T": "vHeat-T", "DeiT-S": "vHeat-T", "Swin-S": "vHeat-S"}


def _build_peers(name: str, model, cfg: Dict, workdir: str) -> deployment.Peers:
    """Exports / compiled module of one vHeat model, from its train-mode weights."""
    official = OfficialVHeat.like(model).eval().infer_init()
    folded = copy.deepcopy(model).eval().set_infer_mode(True)  # folding is one-way: the train steps keep the original
    folded.set_hco_backend(models.fused_backend())
    short = models.SHORT_NAMES.get(name, name)
    return deployment.Peers(short, folded, official, cfg["img_size"], cfg["model_peers"], workdir, torch.get_num_threads())


def clock_name(cfg: Dict) -> str:
    """'thread' (CPU time of the calling thread) with one torch thread unless cfg['timer'] says
    'wall': on a shared machine it leaves out the time other processes hold the core. It is fair
    to every candidate with one thread: torch (MKL, oneDNN, inductor's OpenMP code) and ONNX
    Runtime with intra_op_num_threads = 1 all compute on the calling thread."""
    timer = cfg.get("timer", "auto")
    if timer == "auto":
        return "thread" if torch.get_num_threads() == 1 else "wall"
    if timer == "thread" and torch.get_num_threads() != 1:
        raise ValueError("model section: the thread clock measures one thread; use it with --threads 1")
    return timer


def run(cfg: Dict, peaks: Dict) -> Dict:
    rows = []
    clock = clock_name(cfg)
    kwargs = cfg.get("model_kwargs", {})  # tests: smaller vHeat configs under the same names
    built = {name: models.create(name, cfg["img_size"], cfg["num_classes"], **kwargs.get(name, {}))
             for name in cfg["vheat_models"] + cfg["timm_models"]}
    peers: Dict[str, deployment.Peers] = {}
    with tempfile.TemporaryDirectory(prefix="vheat-bench-onnx-") as workdir:  # the .onnx files, deleted after
        for mode in cfg["modes"]:
            for n in models.batch_sizes(cfg, mode):
                x, y = models.batch(n, cfg["img_size"], cfg["num_classes"])
                fns, status, diffs = {}, {}, {}
                for name, model in built.items():
                    if not models.runs_at(cfg, mode, name, n):
                        continue
                    is_vheat = name.startswith("vheat")
                    if mode == "infer" and is_vheat and cfg.get("model_peers") and name not in peers:
                        peers[name] = _build_peers(name, model, cfg, workdir)
                    own = {label: models.step(mode, runner, backend, x, y)
                           for label, (runner, backend) in models.candidates(name, model).items()}
                    if mode == "infer" and is_vheat:
                        if name in peers:
                            own.update(peers[name].runners(x))
                        reference = next(iter(own.values()))()  # ours, fused, eager: what every candidate must match
                        for label, fn in own.items():
                            if isinstance(fn, str):
                                status[label] = fn
                                continue
                            diffs[label], failure = deployment.check(label, fn, reference)
                            if failure:
                                status[label] = failure
                    fns.update({label: fn for label, fn in own.items() if label not in status})
                ms = time_paired(fns, cfg["min_time"], min_reps=cfg["model_reps"], max_reps=cfg["model_reps"] + 2,
                                 clock=time.thread_time if clock == "thread" else time.perf_counter)
                for label in [*fns, *status]:
                    t = ms.get(label)
                    rows.append({"model": label, "mode": mode, "batch": n, "img_size": cfg["img_size"],
                                 "ms": t, "images_per_s": None if t is None else n / (t * 1e-3),
                                 "status": status.get(label, "ok"), "max_rel_diff": diffs.get(label)})
                print(f"  model {mode} batch {n}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
                      + "".join(f"; {k}: {v}" for k, v in status.items()), file=sys.stderr)
    add_ratios(rows)
    return {"threads": torch.get_num_threads(), "clock": clock, "rows": rows, "max_rel_diff_allowed": deployment.MAX_REL_DIFF,
            "peers": list(cfg.get("model_peers", [])),
            "note": f"{clock} clock ({'CPU time of the one calling thread' if clock == 'thread' else 'wall time'}); inference: eval + torch.no_grad, vHeat in infer mode (E folded); "
                    "train: forward + cross-entropy + backward + AdamW step (torch fused, as vheat train); candidates timed "
                    "interleaved. torch.compile: inductor defaults, compiled before timing; ONNX Runtime: dynamo export "
                    "(dynamic batch), CPU provider, intra-op threads = torch threads, all graph optimisations; inference "
                    "only. x official: the official code's ms / the row's (same vHeat size); ours fused x: the row's ms / "
                    "our fused model's (Swin-T, ConvNeXt-T, DeiT-S against vHeat-T, Swin-S against vHeat-S); max rel "
                    "diff: max |y - y_ours| / max |y_ours| against our eager model on the same input (vHeat rows, "
                    f"inference), a row above {deployment.MAX_REL_DIFF:.0e} fails"}


def vheat_size(label: str) -> Optional[str]:
    """'vHeat-T' for a vHeat-T row (any candidate) or a timm model compared with it, else None."""
    return next((s for s in ("vHeat-T", "vHeat-S", "vHeat-B") if label.startswith(s + " ")), None) or PEER_SIZE.get(label)


def add_ratios(rows: List[Dict]) -> None:
    """x_official (official ms / row ms) and ours_x (row ms / our fused ms), same size, mode and batch."""
    def find(mode, batch, pred):
        return next((r for r in rows if r["mode"] == mode and r["batch"] == batch and r["ms"] and pred(r["model"])), None)

    for r in rows:
        size = vheat_size(r["model"])
        official = size and find(r["mode"], r["batch"], lambda m: m == f"{size} official")
        fused = size and find(r["mode"], r["batch"], lambda m: m.startswith(f"{size} fused"))
        r["x_official"] = official["ms"] / r["ms"] if official and r["ms"] else None
        r["ours_x"] = r["ms"] / fused["ms"] if fused and r["ms"] else None


def _x(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}x"


def table(section: Dict) -> str:
    rows = section["rows"]
    if any("x_official" not in r for r in rows):  # results JSON written without the ratios (full_*.json)
        rows = [dict(r, ms=r.get("ms")) for r in rows]
        add_ratios(rows)
    lines = ["| mode | batch | model | ms / step | images/s | x official | ours fused x | max rel diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.1e}"
        if r["ms"] is None:  # did not compile / not exported / numeric check failed: the reason instead of a time
            lines.append(f"| {r['mode']} | {r['batch']} | {r['model']} | {r['status']} | | | | {diff} |")
            continue
        lines.append(f"| {r['mode']} | {r['batch']} | {r['model']} | {r['ms']:.1f} | {r['images_per_s']:.2f} | "
                     f"{_x(r.get('x_official'))} | {_x(r.get('ours_x'))} | {diff} |")
    return "\n".join(lines)
