"""Memory section: bytes autograd saves for backward and peak RSS, fused HCO vs official formulation.

Two scopes: the HCO alone on vHeat-T's stage-1 plane (fused op vs matmul-DCT), and one whole
vHeat-T training step (ours fused, ours + matmul-DCT, and the official code on the same weights).
"""
from __future__ import annotations

import sys
from typing import Dict

import torch
import torch.nn.functional as F

import vheat_kernels as vk

from . import models
from .measure import SavedTensorBytes, peak_rss_delta_mb


def hco_saved_bytes(shape, backend) -> int:
    """Everything the op keeps for backward, its inputs x and E included (they stay alive for it)."""
    x = torch.randn(shape, requires_grad=True)
    E = torch.rand(shape[1:], requires_grad=True)
    with SavedTensorBytes() as saved:
        y = vk.heat_conduction(x, E, backend=backend)
    y.sum().backward()
    return saved.total_bytes


def train_step_memory(model, backend, x, y) -> Dict:
    if backend is not None:
        model.set_hco_backend(backend)
    model.zero_grad(set_to_none=True)
    with SavedTensorBytes(model.parameters()) as saved:
        loss = F.cross_entropy(model(x), y)
    loss.backward()

    def step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return {"saved_bytes": saved.activation_bytes, "saved_bytes_with_params": saved.total_bytes,
            "peak_rss_mb": peak_rss_delta_mb(step)}


def run(cfg: Dict, peaks: Dict) -> Dict:
    side = cfg["memory_img_size"] // 4
    shape = (cfg["memory_batch"], side, side, 96)
    fused = models.fused_backend()
    hco = {b: hco_saved_bytes(shape, b) for b in (fused, "reference")}
    model = models.create("vheat_tiny", cfg["memory_img_size"], cfg["num_classes"]).train()
    x, y = models.batch(cfg["memory_batch"], cfg["memory_img_size"], cfg["num_classes"])
    step = {b: train_step_memory(model, b, x, y) for b in (fused, "reference")}
    step["official"] = train_step_memory(models.OfficialVHeat.like(model).train(), None, x, y)
    out = {"hco_shape": list(shape), "img_size": cfg["memory_img_size"], "batch": cfg["memory_batch"],
           "fused_backend": fused, "hco_saved_bytes": hco, "train_step": step,
           "hco_saved_ratio": hco["reference"] / max(hco[fused], 1),
           "step_saved_ratio": step["reference"]["saved_bytes"] / max(step[fused]["saved_bytes"], 1),
           "official_step_saved_ratio": step["official"]["saved_bytes"] / max(step[fused]["saved_bytes"], 1),
           "note": "saved bytes: unique storages packed by saved_tensors_hooks; HCO: x and E included; "
                   "train step: parameters excluded; 'reference' = ours + matmul-DCT, 'official' = the official code; "
                   "peak_rss_mb: peak RSS one forward+backward adds (VmHWM after reset)"}
    print(f"  memory: HCO saved {hco}, step ratio x{out['step_saved_ratio']:.2f}", file=sys.stderr)
    return out


def table(section: Dict) -> str:
    fused = section["fused_backend"]
    h, s = section["hco_saved_bytes"], section["train_step"]
    shape = "x".join(map(str, section["hco_shape"]))
    lines = ["| scope | fused (" + fused + ") | ours + matmul-DCT | official code | matmul-DCT / fused | official / fused |",
             "|---|---|---|---|---|---|",
             f"| HCO saved for backward, {shape} (MB) | {h[fused] / 2**20:.2f} | {h['reference'] / 2**20:.2f} | | "
             f"{section['hco_saved_ratio']:.2f} | |"]
    for name, key, scale, fmt in ((f"vHeat-T step saved for backward, batch {section['batch']} @ {section['img_size']} (MB)",
                                   "saved_bytes", 2**20, ".1f"),
                                  ("vHeat-T step peak RSS added (MB)", "peak_rss_mb", 1, ".0f")):
        vals = [s[k][key] / scale for k in (fused, "reference", "official")]
        ratios = [v / max(vals[0], 1e-9) for v in vals[1:]]
        lines.append(f"| {name} | " + " | ".join(format(v, fmt) for v in vals) + " | "
                     + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(lines)
