"""Run configs shipped inside the package: ``*.yaml`` for the ``vheat`` command line
(README.md here lists them) and ``downstream/`` for mmdetection / mmsegmentation.

Found through ``importlib.resources``, so a wheel, an sdist install, an editable install and
the source tree all resolve ``vheat_tiny`` to the same file.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def _root() -> Path:
    # pip installs packages as folders (never zipped), so the resource root is a real path:
    # load_config and mmengine's Config.fromfile need one.
    return Path(os.fspath(files(__name__)))


def shipped_configs() -> list[str]:
    """Names of the YAML configs that ``resolve_config_path`` accepts (``vheat_tiny``, ...)."""
    return sorted(p.stem for p in _root().glob("*.yaml"))


def resolve_config_path(name: str) -> str:
    """``name`` if it is a file, else the shipped config of that name (with or without .yaml)."""
    if os.path.isfile(name):
        return name
    for candidate in (_root() / name, _root() / f"{name}.yaml"):
        if candidate.suffix == ".yaml" and candidate.is_file():
            return str(candidate)
    from vheat.train.config import ConfigError

    raise ConfigError(f"config {name!r} not found (give a YAML path or one of: {', '.join(shipped_configs()) or 'none'})")


def downstream_config_dir() -> Path:
    """Folder of the mmdetection / mmsegmentation configs (``mask_rcnn_vheat_tiny_fpn_1x_coco.py``, ...)."""
    return _root() / "downstream"
