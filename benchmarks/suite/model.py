"""Model section: whole-model inference throughput and training step time, all candidates interleaved.

vHeat runs three ways on the same weights (models.candidates): ours on the fused HCO, the
official code (the targets' baseline), and ours with the official matmul-DCT HCO.
"""
from __future__ import annotations

import sys
from typing import Dict

import torch

from . import models
from .measure import time_paired


def run(cfg: Dict, peaks: Dict) -> Dict:
    rows = []
    built = {name: models.create(name, cfg["img_size"], cfg["num_classes"]) for name in cfg["vheat_models"] + cfg["timm_models"]}
    for mode in cfg["modes"]:
        for n in models.batch_sizes(cfg, mode):
            x, y = models.batch(n, cfg["img_size"], cfg["num_classes"])
            fns = {}
            for name, model in built.items():
                if not models.runs_at(cfg, mode, name, n):
                    continue
                for label, (runner, backend) in models.candidates(name, model).items():
                    fns[label] = models.step(mode, runner, backend, x, y)
            ms = time_paired(fns, cfg["min_time"], min_reps=cfg["model_reps"], max_reps=cfg["model_reps"] + 2)
            for label, t in ms.items():
                rows.append({"model": label, "mode": mode, "batch": n, "img_size": cfg["img_size"],
                             "ms": t, "images_per_s": n / (t * 1e-3)})
            print(f"  model {mode} batch {n}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()), file=sys.stderr)
    return {"threads": torch.get_num_threads(), "rows": rows,
            "note": "inference: eval + torch.no_grad, vHeat in infer mode (E folded); "
                    "train: forward + cross-entropy + backward + AdamW step (torch fused, as vheat train); candidates timed interleaved"}


def table(section: Dict) -> str:
    lines = ["| mode | batch | model | ms / step | images/s |", "|---|---|---|---|---|"]
    for r in section["rows"]:
        lines.append(f"| {r['mode']} | {r['batch']} | {r['model']} | {r['ms']:.1f} | {r['images_per_s']:.2f} |")
    return "\n".join(lines)
