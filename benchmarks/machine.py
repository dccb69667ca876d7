"""Which machine a benchmark ran on: CPU model, the instruction set our CPU kernels used, and
the file-name tag of that machine class, so that results of different CPUs sit side by side
instead of overwriting each other."""
from __future__ import annotations

import os
import platform
import subprocess


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(name))
    except (OSError, StopIteration):
        return None


def host_isa() -> str:
    """The widest instruction set of the CPU kernels this CPU runs (csrc/cpu/hco_cpu.cpp picks
    the same: avx512f, else avx2 with fma, else generic)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return "avx512" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= flags else "generic"


# The switches that narrow what a library dispatches to, read at process start: ours
# (csrc/cpu/hco_cpu.cpp), ATen's own kernels and inductor's generated code, oneDNN (torch's
# convolutions and its oneDNN linear), MKL (torch's matmul / addmm). Setting them all to AVX2 on
# an AVX-512 host approximates an AVX2-only CPU of the same cores; ONNX Runtime's MLAS has no
# such switch and keeps the host's widest ISA.
ISA_SWITCHES = ("VHEAT_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_info():
    """CPU model, the ISA our CPU kernels ran (forced by $VHEAT_CPU_ISA or the host's
    widest), which ISA switches were set (isa_forced_by), threads and versions."""
    import torch
    import vheat_kernels as vk

    forced = os.environ.get("VHEAT_CPU_ISA") or None
    return {"cpu": _cpuinfo_field("model name") or platform.processor(), "host_isa": host_isa(),
            "isa": forced or host_isa(), "isa_forced": forced is not None,
            "isa_forced_by": {k: os.environ[k] for k in ISA_SWITCHES if os.environ.get(k)},
            "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "build_info": vk.build_info()}


def machine_class(machine) -> str:
    """File-name tag of a machine class: CPU model and kernel ISA, e.g. amd-epyc_avx512, or
    amd-epyc_avx2-forced-on-avx512 when $VHEAT_CPU_ISA narrowed the host's."""
    cpu = "-".join("".join(c if c.isalnum() else " " for c in machine["cpu"].lower()).split()) or "unknown-cpu"
    isa = machine.get("isa", "unknown-isa")
    if machine.get("isa_forced") and isa != machine.get("host_isa"):
        isa += f"-forced-on-{machine['host_isa']}"
    return f"{cpu}_{isa}"


def machine_label(machine) -> str:
    """The CPU model and ISA, as tables name them."""
    isa = machine.get("isa", "kernel ISA not recorded")
    if machine.get("isa_forced") and isa != machine.get("host_isa"):
        switches = " ".join(f"{k}={v}" for k, v in machine.get("isa_forced_by", {}).items()) or "VHEAT_CPU_ISA"
        isa += f" (forced by {switches} on an {machine['host_isa']} host)"
    return f"{machine['cpu']}, {isa}"


def git_revision() -> str:
    """Commit of the code measured, with '+dirty' when the working tree differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def use_own_inductor_cache(machine) -> None:
    """Give a run with ISA switches set (machine_info's isa_forced_by) a torch.compile cache of its
    own, beside Inductor's default one and named by the machine class, unless the caller chose one
    ($TORCHINDUCTOR_CACHE_DIR). Inductor's cache key leaves those switches out: on a 2-core Intel
    Xeon with AVX-512 (torch 2.14.1) the official vHeat-T that a run with AVX2 forced had compiled
    was reused by the next native run and died there with SIGSEGV; a fresh cache, or one filled
    natively, ran in both."""
    if not machine["isa_forced_by"] or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}_{machine_class(machine)}"
