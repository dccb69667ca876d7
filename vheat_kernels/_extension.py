"""Loads the compiled op library (vheat_kernels._C) once, at import, and explains why when
it cannot. The result is plain module state so torch.compile can trace the dispatcher."""
from __future__ import annotations

import importlib

from .cuda_arch import parse_arch_list

# The oldest torch and Triton the package is built and tested on (pyproject.toml declares
# them; `make test-compat` runs the tests there).
TORCH_REQUIREMENT = ">=2.11"
TRITON_REQUIREMENT = ">=3.6"


class ExtensionMissingError(RuntimeError):
    """The compiled vheat op library is not built or failed to load."""


def _load():
    try:
        module = importlib.import_module("vheat_kernels._C")
    except ImportError as exc:  # not built, or built against another torch
        return None, f"{type(exc).__name__}: {exc}", {}
    info = dict(module.build_info(), torch_requirement=TORCH_REQUIREMENT, triton_requirement=TRITON_REQUIREMENT)
    return module, None, _with_cuda_archs(info)


def _with_cuda_archs(info: dict) -> dict:
    """Adds cuda_sass / cuda_ptx (lists like ["8.0", "9.0"]) parsed from cuda_arch_list;
    both None when the build did not record its architectures (older or CPU-only builds)."""
    text = info.setdefault("cuda_arch_list", None)
    info["cuda_sass"] = info["cuda_ptx"] = None
    if text:
        try:
            archs = parse_arch_list(text)
        except ValueError as exc:
            info["cuda_arch_error"] = str(exc)
        else:
            info["cuda_sass"] = [str(a) for a in archs.sass]
            info["cuda_ptx"] = [str(a) for a in archs.ptx]
    return info


_MODULE, _LOAD_ERROR, _BUILD_INFO = _load()


def extension_available() -> bool:
    return _MODULE is not None


def build_info() -> dict:
    """What the op library was compiled with ({} when it is not built): openmp, cuda, the
    torch it was built against (torch_built), the torch / Triton versions the package
    supports (torch_requirement, triton_requirement), and for CUDA the arch list
    (cuda_arch_list) with its SASS (cuda_sass) and PTX (cuda_ptx) entries."""
    return _BUILD_INFO


def load_error() -> str | None:
    return _LOAD_ERROR


def require_extension():
    """Return the loaded extension or raise an error that says how to build it."""
    if _MODULE is None:
        raise ExtensionMissingError(
            "the compiled vheat op library (vheat_kernels._C) is not available "
            f"({_LOAD_ERROR}). Build it with `bash scripts/setup_env.sh` (or `make build`) "
            "from the repository root, or pick a pure-PyTorch backend: backend='fft' or "
            "backend='reference'."
        )
    return _MODULE
