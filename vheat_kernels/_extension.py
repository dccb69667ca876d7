"""Loads the compiled op library (vheat_kernels._C) and explains why when it cannot."""
from __future__ import annotations

import functools
import importlib


class ExtensionMissingError(RuntimeError):
    """The compiled vheat op library is not built or failed to load."""


@functools.lru_cache(maxsize=1)
def _load():
    try:
        module = importlib.import_module("vheat_kernels._C")
    except ImportError as exc:  # not built, or built against another torch
        return None, f"{type(exc).__name__}: {exc}"
    return module, None


def extension_available() -> bool:
    return _load()[0] is not None


def build_info() -> dict:
    """What the op library was compiled with ({} when it is not built)."""
    module, _ = _load()
    return dict(module.build_info()) if module is not None else {}


def require_extension():
    """Return the loaded extension or raise an error that says how to build it."""
    module, reason = _load()
    if module is None:
        raise ExtensionMissingError(
            "the compiled vheat op library (vheat_kernels._C) is not available "
            f"({reason}). Build it with `pip install --no-build-isolation -e .` "
            "(or `make build`) from the repository root, or pick a pure-PyTorch "
            "backend: backend='fft' or backend='reference'."
        )
    return module
