"""Which GPUs the compiled CUDA kernels can run on.

The op library records the ``TORCH_CUDA_ARCH_LIST`` it was built with (setup.py passes
it to the compilers as the string macro ``VHEAT_CUDA_ARCH_LIST``; ``build_info()``
returns it as ``cuda_arch_list``). An entry ``X.Y`` embeds SASS for sm_XY, ``X.Y+PTX``
also PTX for compute_XY. A device of compute capability (M, m) runs

* SASS sm_XY when X == M and Y <= m (binary compatibility within a major version;
  arch-specific ``X.Ya`` SASS only on exactly X.Y, family ``X.Yf`` within major X);
* PTX compute_XY when XY <= Mm (the driver JIT-compiles it for the newer GPU).

Anything else fails at the first launch with "no kernel image is available", which is
what ``arch_reason`` turns into a message saying what to rebuild with.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_ENTRY = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$", re.IGNORECASE)
# Names torch.utils.cpp_extension also accepts in TORCH_CUDA_ARCH_LIST.
_NAMED = {"kepler+tesla": "3.7", "kepler": "3.5+PTX", "maxwell+tegra": "5.3", "maxwell": "5.0;5.2+PTX",
          "pascal": "6.0;6.1+PTX", "volta+tegra": "7.2", "volta": "7.0+PTX", "turing": "7.5+PTX",
          "ampere+tegra": "8.7", "ampere": "8.0;8.6+PTX", "ada": "8.9+PTX", "hopper": "9.0+PTX"}


@dataclass(frozen=True)
class Arch:
    major: int
    minor: int
    variant: str = ""  # "", "a" (arch-specific) or "f" (family)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}{self.variant}"

    def sass_runs_on(self, cap: tuple[int, int]) -> bool:
        if self.variant == "a":
            return cap == (self.major, self.minor)
        return cap[0] == self.major and cap[1] >= self.minor

    def ptx_runs_on(self, cap: tuple[int, int]) -> bool:
        if self.variant == "a":
            return cap == (self.major, self.minor)
        if self.variant == "f":
            return cap[0] == self.major and cap[1] >= self.minor
        return cap >= (self.major, self.minor)


@dataclass(frozen=True)
class ArchList:
    sass: tuple[Arch, ...]
    ptx: tuple[Arch, ...]

    def runs_on(self, cap: tuple[int, int]) -> bool:
        return any(a.sass_runs_on(cap) for a in self.sass) or any(a.ptx_runs_on(cap) for a in self.ptx)

    def describe(self) -> str:
        sass = ", ".join(f"sm_{a.major}{a.minor}{a.variant}" for a in self.sass) or "none"
        ptx = ", ".join(f"compute_{a.major}{a.minor}{a.variant}" for a in self.ptx) or "none"
        return f"SASS {sass}; PTX {ptx}"


def parse_arch_list(text: str) -> ArchList:
    """Parse a TORCH_CUDA_ARCH_LIST value ("8.0;9.0+PTX", "8.6 9.0", "Ampere;Hopper")."""
    sass: list[Arch] = []
    ptx: list[Arch] = []
    for raw in re.split(r"[;\s,]+", text.strip()):
        if not raw:
            continue
        if raw.lower() in _NAMED:
            named = parse_arch_list(_NAMED[raw.lower()])
            sass += named.sass
            ptx += named.ptx
            continue
        m = _ENTRY.match(raw)
        if m is None:
            raise ValueError(f"cannot parse CUDA architecture {raw!r} in {text!r}; accepted: entries like "
                             "'8.0', '9.0+PTX', '9.0a' or the names " + ", ".join(sorted(_NAMED)))
        arch = Arch(int(m.group(1)), int(m.group(2)), m.group(3).lower())
        sass.append(arch)
        if m.group(4):
            ptx.append(arch)
    return ArchList(tuple(dict.fromkeys(sass)), tuple(dict.fromkeys(ptx)))


def compiled_arch_list(info: dict) -> Optional[ArchList]:
    """The architectures in a build_info() dict; None when the build did not record them."""
    text = info.get("cuda_arch_list")
    return parse_arch_list(text) if text else None


def device_capability(device) -> tuple[int, int]:
    """(major, minor) of a CUDA device (tests monkeypatch torch.cuda.get_device_capability)."""
    import torch

    return tuple(torch.cuda.get_device_capability(device))


def rebuild_hint(cap: tuple[int, int]) -> str:
    return (f"rebuild with TORCH_CUDA_ARCH_LIST=\"{cap[0]}.{cap[1]}\" VHEAT_BUILD_CUDA=1 "
            "bash scripts/setup_env.sh (or add +PTX to the newest entry)")


def arch_reason(cap: tuple[int, int], info: dict) -> Optional[str]:
    """None when the CUDA kernels of this build run on a device of capability ``cap``."""
    try:
        archs = compiled_arch_list(info)
    except ValueError as exc:
        return f"the op library's recorded CUDA architectures are unreadable ({exc}); " + rebuild_hint(cap)
    if archs is None:
        return ("the op library does not record which CUDA architectures it was compiled for (built "
                f"before that was recorded), so it may not run on this sm_{cap[0]}{cap[1]} GPU; "
                + rebuild_hint(cap))
    if not archs.runs_on(cap):
        return (f"the CUDA kernels were compiled for {archs.describe()}, none of which runs on this "
                f"sm_{cap[0]}{cap[1]} GPU; " + rebuild_hint(cap))
    return None
