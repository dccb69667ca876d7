"""Shipped run configs (vheat/configs): lookup by name and what the wheel's package data holds."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vheat.configs import downstream_config_dir, resolve_config_path, shipped_configs
from vheat.train.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "vheat" / "configs"


def test_shipped_yaml_configs():
    assert {"demo_digits", "vheat_tiny", "vheat_small", "vheat_base"} <= set(shipped_configs())


@pytest.mark.parametrize("name", ["vheat_tiny", "vheat_tiny.yaml"])
def test_name_resolves_inside_the_package(name):
    assert Path(resolve_config_path(name)) == CONFIGS / "vheat_tiny.yaml"


def test_path_passes_through(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train: {epochs: 1}\n")
    assert resolve_config_path(str(path)) == str(path)


@pytest.mark.parametrize("name", ["README.md", "README", "downstream", "__init__", "vheat_huge"])
def test_only_yaml_configs_resolve_and_the_error_lists_them(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a name is first tried as a path
    with pytest.raises(ConfigError, match=r"not found \(give a YAML path or one of: .*vheat_tiny"):
        resolve_config_path(name)


def test_downstream_configs_are_there():
    names = {p.name for p in downstream_config_dir().glob("*.py")}
    assert {"mask_rcnn_vheat_tiny_fpn_1x_coco.py", "upernet_vheat_tiny_160k_ade20k_512x512.py"} <= names


def test_package_data_covers_every_config_file():
    """A config added without a matching package-data pattern would be missing from wheels."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vheat.configs"]
    files = [p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"]
    assert files
    covered = {p.relative_to(CONFIGS).as_posix() for pat in patterns for p in CONFIGS.glob(pat)}  # setuptools' globs
    missing = sorted(set(files) - covered)
    assert not missing, f"not in [tool.setuptools.package-data] 'vheat.configs': {missing}"
