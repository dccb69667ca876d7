"""setup.py's CUDA build policy: when the CUDA kernels are built, the messages when they are
not, and the architecture list compiled in (README "Install"). No compiler runs here."""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_py(monkeypatch):
    monkeypatch.chdir(REPO)  # setup.py globs its sources relative to the checkout
    # setup.py sets TORCH_CUDA_ARCH_LIST / CUDA_HOME for torch's build code: restore them after.
    for var in ("VHEAT_BUILD_CUDA", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if var != "CUDA_HOME" or not os.environ[var]:
            monkeypatch.delenv(var)
    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    spec = importlib.util.spec_from_file_location("vheat_setup_under_test", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() only runs as __main__
    return module


@pytest.mark.parametrize("value, mode", [(None, "auto"), ("auto", "auto"), ("1", "on"), ("force", "on"),
                                         ("0", "off"), ("OFF", "off")])
def test_build_cuda_mode(setup_py, monkeypatch, value, mode):
    if value is not None:
        monkeypatch.setenv("VHEAT_BUILD_CUDA", value)
    assert setup_py.build_cuda_mode() == mode


def test_unknown_mode_is_an_error_naming_the_choices(setup_py, monkeypatch):
    monkeypatch.setenv("VHEAT_BUILD_CUDA", "maybe")
    with pytest.raises(SystemExit, match=r"VHEAT_BUILD_CUDA='maybe' is not one of auto, 1, 0"):
        setup_py.build_cuda_mode()


def test_auto_without_gpu_builds_cpu_only_even_with_nvcc(setup_py):
    build, why = setup_py.decide_cuda_build("auto", None, [])
    assert not build and "no GPU visible" in why and "VHEAT_BUILD_CUDA=1" in why


def test_auto_with_gpu_builds_cuda(setup_py):
    build, why = setup_py.decide_cuda_build("auto", "nvidia-smi -L lists 1 GPU(s)", [])
    assert build and "VHEAT_BUILD_CUDA=0 skips" in why


def test_auto_with_gpu_but_mismatched_nvcc_builds_cpu_only_with_the_reason(setup_py):
    problems = setup_py.cuda_build_problems("13.0", "/opt/cuda-12.4", "12.4")
    build, why = setup_py.decide_cuda_build("auto", "torch sees 1 CUDA device(s)", problems)
    assert not build and "CUDA 12.4" in why and "CUDA 13.0" in why and "Building CPU-only" in why


def test_forced_build_with_mismatched_nvcc_exits_saying_what_disagrees_and_what_to_do(setup_py):
    problems = setup_py.cuda_build_problems("13.0", "/opt/cuda-12.4", "12.4")
    with pytest.raises(SystemExit) as exc:
        setup_py.decide_cuda_build("on", None, problems)
    msg = str(exc.value)
    assert "VHEAT_BUILD_CUDA=1" in msg and "nvcc in /opt/cuda-12.4 is CUDA 12.4" in msg
    assert "torch was built with CUDA 13.0" in msg and "CUDA_HOME" in msg and "VHEAT_BUILD_CUDA=0" in msg


def test_forced_build_needs_no_gpu(setup_py):
    assert setup_py.decide_cuda_build("on", None, [])[0]


def test_off_never_builds(setup_py):
    assert setup_py.decide_cuda_build("off", "nvidia-smi -L lists 8 GPU(s)", [])[0] is False


@pytest.mark.parametrize("torch_cuda, home, version, expect", [
    ("13.0", "/cuda", "13.0", None),
    ("13.0", "/cuda", "13.2", None),  # minor mismatch: torch only warns
    (None, "/cuda", "13.0", "not a CUDA build"),
    ("13.0", None, None, "no CUDA toolkit found"),
    ("13.0", "/cuda", None, "cannot read the CUDA version"),
    ("12.8", "/cuda", "13.0", "torch was built with CUDA 12.8"),
])
def test_cuda_build_problems(setup_py, torch_cuda, home, version, expect):
    problems = setup_py.cuda_build_problems(torch_cuda, home, version)
    assert (problems == []) if expect is None else (len(problems) == 1 and expect in problems[0]), problems


def test_visible_gpu_reads_nvidia_smi(setup_py, tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n"
                    "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert setup_py.visible_gpu() == "nvidia-smi -L lists 2 GPU(s)"


def test_visible_gpu_ignores_nvidia_smi_without_devices(setup_py, tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices found.'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup_py.visible_gpu() is None


def _flags(ext, compiler):
    return ext.extra_compile_args[compiler]


def test_cpu_only_build_has_no_cuda_sources_or_macros(setup_py, monkeypatch, capsys):
    monkeypatch.setenv("VHEAT_BUILD_CUDA", "0")
    (ext,) = setup_py.extensions()
    assert not any(s.startswith("csrc/cuda") for s in ext.sources)
    assert not any("VHEAT_CUDA_ARCH_LIST" in f or "VHEAT_WITH_CUDA" in f for f in _flags(ext, "cxx"))
    assert "VHEAT_BUILD_CUDA=0" in capsys.readouterr().err


def test_auto_here_decides_by_gpu_not_by_nvcc(setup_py, monkeypatch, capsys):
    monkeypatch.setattr(setup_py, "visible_gpu", lambda: None)
    (ext,) = setup_py.extensions()
    assert not any(s.startswith("csrc/cuda") for s in ext.sources)
    assert "no GPU visible" in capsys.readouterr().err


needs_toolkit = pytest.mark.skipif(torch.version.cuda is None or shutil.which("nvcc") is None,
                                   reason="needs a CUDA torch and nvcc")


@needs_toolkit
@pytest.mark.parametrize("arch_env, arch", [(None, "8.0;9.0+PTX"), ("7.5;8.6+PTX", "7.5;8.6+PTX")])
def test_cuda_build_compiles_in_its_arch_list(setup_py, monkeypatch, arch_env, arch):
    monkeypatch.setenv("VHEAT_BUILD_CUDA", "1")
    if arch_env:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_env)
    (ext,) = setup_py.extensions()
    assert any(s.endswith(".cu") for s in ext.sources)
    macro = f'-DVHEAT_CUDA_ARCH_LIST="{arch}"'  # one argv entry; ninja shell-quotes it
    assert macro in _flags(ext, "cxx") and macro in _flags(ext, "nvcc")
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == arch  # what torch's -gencode flags come from


@needs_toolkit
def test_this_machines_toolkit_matches_torch(setup_py):
    home = setup_py._locate_cuda_home()
    version = setup_py.nvcc_version(home)
    assert version and version.split(".")[0] == torch.version.cuda.split(".")[0]
    assert setup_py.cuda_build_problems(torch.version.cuda, home, version) == []
