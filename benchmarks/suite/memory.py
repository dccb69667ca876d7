"""Memory section: bytes autograd saves for backward and peak RSS, fused HCO vs official formulation.

Two scopes: the HCO alone on vHeat-T's stage-1 plane, and one whole vHeat-T training step.
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
    out = {"hco_shape": list(shape), "img_size": cfg["memory_img_size"], "batch": cfg["memory_batch"],
           "fused_backend": fused, "hco_saved_bytes": hco, "train_step": step,
           "hco_saved_ratio": hco["reference"] / max(hco[fused], 1),
           "step_saved_ratio": step["reference"]["saved_bytes"] / max(step[fused]["saved_bytes"], 1),
           "note": "saved bytes: unique storages packed by saved_tensors_hooks; HCO: x and E included; "
                   "train step: parameters excluded; "
                   "peak_rss_mb: peak RSS one forward+backward adds (VmHWM after reset)"}
    print(f"  memory: HCO saved {hco}, step ratio x{out['step_saved_ratio']:.2f}", file=sys.stderr)
    return out


def table(section: Dict) -> str:
    fused = section["fused_backend"]
    lines = ["| scope | fused (" + fused + ") | official (reference) | official / fused |", "|---|---|---|---|"]
    h, s = section["hco_saved_bytes"], section["train_step"]
    shape = "x".join(map(str, section["hco_shape"]))
    lines.append(f"| HCO saved for backward, {shape} (MB) | {h[fused] / 2**20:.2f} | {h['reference'] / 2**20:.2f} | {section['hco_saved_ratio']:.2f} |")
    lines.append(f"| vHeat-T step saved for backward, batch {section['batch']} @ {section['img_size']} (MB) | "
                 f"{s[fused]['saved_bytes'] / 2**20:.1f} | {s['reference']['saved_bytes'] / 2**20:.1f} | {section['step_saved_ratio']:.2f} |")
    ratio = s["reference"]["peak_rss_mb"] / max(s[fused]["peak_rss_mb"], 1e-9)
    lines.append(f"| vHeat-T step peak RSS added (MB) | {s[fused]['peak_rss_mb']:.0f} | {s['reference']['peak_rss_mb']:.0f} | {ratio:.2f} |")
    return "\n".join(lines)
