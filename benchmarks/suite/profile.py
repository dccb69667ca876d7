"""Profile section: where a vHeat step spends its time, per op family (torch.profiler, CPU).

Each op's self time (time inside the op, its children excluded) is summed per family; what
no op accounts for is Python and framework time (module calls, argument checks, the HCO's
backend choice, autograd bookkeeping outside the engine's own events). The profiler adds
its own per-op cost, so the unprofiled step time is reported beside the profiled one and
the families are shown as shares of the profiled step.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile

import vheat_kernels as vk

from . import models
from .measure import time_paired

# Family of an op, by the first pattern its name matches (order matters: backward ops of
# an activation are activations, "mkldnn_convolution" is a convolution, not a GEMM).
FAMILIES = [
    ("HCO", r"^vheat::"),
    ("conv", r"convolution|conv2d|conv_depthwise"),
    ("GEMM", r"^aten::(addmm|mm|bmm|baddbmm|matmul|linear|_addmm_activation)$|^mkldnn::_linear|^aten::mkldnn_linear"),
    ("LayerNorm", r"layer_norm"),
    ("activation", r"gelu|silu|relu|sigmoid|threshold_backward"),
    ("optimizer", r"adamw?_|_foreach_|^Optimizer\."),
    ("loss / head", r"cross_entropy|log_softmax|nll_loss|adaptive_avg_pool|adaptive_max_pool|^aten::mean$"),
    ("copy / layout", r"copy_|clone|contiguous|_to_copy|^aten::to$|^aten::cat$|empty|as_strided|permute|transpose|"
                      r"^aten::(view|reshape|_reshape_alias|t|expand|chunk|split|split_with_sizes|narrow|slice|"
                      r"select|unsqueeze|squeeze|flatten|detach|alias|resize_|fill_|zero_|zeros|ones)$"),
    ("elementwise", r"^aten::(add|add_|mul|mul_|div|div_|sub|sub_|pow|exp|log|where|addcmul_|addcdiv_|"
                    r"sqrt|rsqrt|neg|lerp_|clamp|clamp_|maximum|sum|dropout|bernoulli_|floor_|div_)$"),
    ("autograd engine", r"^autograd::|^torch::autograd::|Backward\d*$|AccumulateGrad"),
]
_COMPILED = [(name, re.compile(pattern)) for name, pattern in FAMILIES]
FAMILY_NAMES = [name for name, _ in FAMILIES] + ["other ops", "Python / framework"]


def family(op: str) -> str:
    for name, pattern in _COMPILED:
        if pattern.search(op):
            return name
    return "other ops"


def profile_step(step, reps: int = 3) -> Dict:
    """ms per step per family over ``reps`` profiled steps (after one unprofiled warm-up).

    Also the step's unprofiled median and the 20 costliest ops with their family, to audit the mapping.
    """
    unprofiled = time_paired({"step": step}, 0.0, min_reps=reps, max_reps=reps, warm_up=1)["step"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        wall = (time.perf_counter() - t0) / reps * 1e3
    ms = {name: 0.0 for name in FAMILY_NAMES}
    per_op: Dict[str, float] = {}
    for ev in prof.key_averages():
        self_ms = ev.self_cpu_time_total / 1e3 / reps  # profiler times are in microseconds
        ms[family(ev.key)] += self_ms
        per_op[ev.key] = per_op.get(ev.key, 0.0) + self_ms
    ms["Python / framework"] = max(wall - sum(ms.values()), 0.0)
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:20]
    return {"profiled_ms": wall, "unprofiled_ms": unprofiled, "family_ms": ms,
            "top_ops_ms": [{"op": op, "family": family(op), "ms": t} for op, t in top]}


def hco_call_overhead(model, x, min_time: float) -> Dict:
    """Per HCO call: time through the model's entry (checks, backend choice, autograd wrapper)
    against the bare compiled op, on the planes this input produces (inference, no grad)."""
    planes: List[torch.Size] = []

    def grab(module, args, output):  # the HCO's plane has the block's output shape
        planes.append(output.shape)
    handles = [b.op.register_forward_hook(grab) for s in model.layers for b in s.blocks[:1]]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    rows = []
    for shape in planes:
        xs = torch.randn(shape)
        E = torch.rand(shape[1:])
        entry = lambda: vk.heat_conduction(xs, E, backend=models.fused_backend())
        bare = (lambda: torch.ops.vheat.hco_forward(xs, E)) if models.fused_backend() == "cpu" else entry
        with torch.no_grad():
            t = time_paired({"entry": entry, "bare": bare}, min_time, min_reps=20, max_reps=400)
        rows.append({"shape": list(shape), "entry_us": t["entry"] * 1e3, "bare_us": t["bare"] * 1e3})
    return {"rows": rows}


def run(cfg: Dict, peaks: Dict) -> Dict:
    rows = []
    for name in cfg["vheat_models"]:
        model = models.create(name, cfg["img_size"], cfg["num_classes"])
        for mode in cfg["modes"]:
            for n in models.batch_sizes(cfg, mode):
                if not models.runs_at(cfg, mode, name, n):
                    continue
                x, y = models.batch(n, cfg["img_size"], cfg["num_classes"])
                for label, (runner, backend) in models.candidates(name, model).items():
                    if "matmul-DCT" in label:
                        continue  # the kernel section and the model section already isolate the HCO
                    prof = profile_step(models.step(mode, runner, backend, x, y))
                    rows.append({"model": label, "mode": mode, "batch": n, "img_size": cfg["img_size"], **prof})
                    print(f"  profile {label} {mode} batch {n}: {prof['unprofiled_ms']:.0f} ms", file=sys.stderr)
    tiny = models.create("vheat_tiny", cfg["img_size"], cfg["num_classes"]).eval()
    tiny.set_infer_mode(True)
    overhead = hco_call_overhead(tiny, models.batch(1, cfg["img_size"])[0], cfg["min_time"])
    return {"threads": torch.get_num_threads(), "rows": rows, "hco_call": overhead, "families": FAMILY_NAMES,
            "note": "self CPU time per op family from torch.profiler, ms per step (share of the profiled step); "
                    "'Python / framework' = profiled step time not inside any op. Inference: eval + no_grad, "
                    "infer mode; train: forward + cross-entropy + backward + fused AdamW step."}


def table(section: Dict) -> str:
    fams = section["families"]
    lines = ["| model | mode | batch | step ms (profiled) | " + " | ".join(fams) + " |",
             "|---|---|---|---|" + "---|" * len(fams)]
    for r in section["rows"]:
        total = r["profiled_ms"]
        cells = [f"{r['family_ms'][f]:.1f} ({100 * r['family_ms'][f] / total:.0f}%)" for f in fams]
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['unprofiled_ms']:.1f} ({total:.1f}) | "
                     + " | ".join(cells) + " |")
    call = section.get("hco_call", {}).get("rows", [])
    if call:
        lines += ["", "HCO per call, vHeat-T infer planes at batch 1: the public entry (checks, backend choice, "
                  "autograd wrapper) vs the bare compiled op", "", "| plane | entry us | bare op us | overhead us |",
                  "|---|---|---|---|"]
        for c in call:
            lines.append(f"| {'x'.join(map(str, c['shape']))} | {c['entry_us']:.1f} | {c['bare_us']:.1f} | "
                         f"{c['entry_us'] - c['bare_us']:.1f} |")
    return "\n".join(lines)
