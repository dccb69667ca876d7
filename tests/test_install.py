"""A user's install, end to end (slow; `make test-install`, part of `make test`).

Builds the sdist of this checkout, then in a fresh temporary virtualenv: installs torch and
the build tools, builds a wheel from the unpacked sdist (`--no-build-isolation`,
VHEAT_BUILD_CUDA=0), installs it with its dependencies and, from a folder outside the
repository, imports both packages, runs the compiled cpu backend against the reference and
runs the `vheat` console script. pip's cache is used as usual (nothing is downloaded twice);
torch comes from wherever pip finds it (the machine's local wheels here).
"""
from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUILD_REQUIRES = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
# The dev environment's torch (requirements.txt; it lies on local disk here), then the build
# requirements besides torch: what a user installs before `pip install --no-build-isolation`.
TORCH_PIN = next(line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
                 if line.startswith("torch=="))
BUILD_TOOLS = [r for r in BUILD_REQUIRES if not r.startswith("torch")]
STEP_TIMEOUT_S = 1800


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR", "PYTHONHOME")}
    env.update(VHEAT_BUILD_CUDA="0", MAX_JOBS=env.get("MAX_JOBS", "2"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(cmd, cwd, timings: dict, step: str) -> str:
    """Runs one step of the install, timed; its stdout (all output in the failure message)."""
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S)
    timings[step] = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"{step} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc.stdout


@pytest.fixture(scope="module")
def installed():
    """sdist -> fresh venv -> wheel from the unpacked sdist -> installed wheel."""
    timings: dict = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vheat-install-") as tmp:  # ~6 GB venv: removed after
        tmp = Path(tmp)
        # What `python -m build --sdist --no-isolation` runs.
        build_sdist = "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])"
        _run([sys.executable, "-c", build_sdist, tmp / "sdist"], REPO, timings, "build sdist")
        (sdist,) = (tmp / "sdist").glob("vheat_kernels-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        (src,) = (tmp / "src").iterdir()

        venv = tmp / "venv"
        _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], tmp, timings, "create venv")
        py = venv / "bin" / "python"
        _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], tmp, timings, "upgrade pip")
        _run([py, "-m", "pip", "install", "-q", TORCH_PIN, *BUILD_TOOLS], tmp, timings, "install torch + build tools")
        _run([py, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", tmp / "wheels", src],
             tmp, timings, "build wheel from sdist")
        (wheel,) = (tmp / "wheels").glob("vheat_kernels-*.whl")
        _run([py, "-m", "pip", "install", "-q", wheel], tmp, timings, "install wheel + dependencies")

        outside = tmp / "elsewhere"
        outside.mkdir()
        timings["total"] = round(time.perf_counter() - start, 1)
        print(f"\ninstall test timings (s): {json.dumps(timings)}")
        yield dict(sdist=sdist, wheel=wheel, venv=venv, py=py, cwd=outside, timings=timings)


def test_sdist_has_every_source_header_config_and_license(installed):
    with tarfile.open(installed["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = {str(p.relative_to(REPO)) for p in (REPO / "csrc").rglob("*") if p.suffix in (".h", ".cuh", ".cu", ".cpp")}
    wanted |= {str(p.relative_to(REPO)) for p in (REPO / "vheat" / "configs").rglob("*") if p.suffix in (".yaml", ".py")}
    wanted |= {"README.md", "LICENSE", "CITATION.cff", "CHANGELOG.md", "pyproject.toml", "setup.py"}
    assert any(n.endswith(".cuh") for n in wanted) and any(n.endswith("vheat_tiny.yaml") for n in wanted)
    assert not wanted - names, f"missing from the sdist: {sorted(wanted - names)}"


def test_wheel_ships_extension_configs_and_types(installed):
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = set(whl.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(whl.read(meta))
    assert any(re.fullmatch(r"vheat_kernels/_C\..*\.so", n) for n in names), "no compiled op library"
    for name in ("vheat/configs/vheat_tiny.yaml", "vheat/configs/demo_digits.yaml",
                 "vheat/configs/downstream/mask_rcnn_vheat_tiny_fpn_1x_coco.py", "vheat/py.typed",
                 "vheat_kernels/py.typed"):
        assert name in names, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert metadata["License-Expression"] == "Apache-2.0" and metadata["Summary"]
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


# Runs in the installed environment, from a folder outside the repository.
CHECK = r"""
import importlib.metadata as md, json, sys
import torch, vheat, vheat_kernels as vk
from vheat.configs import resolve_config_path

assert vk.extension_available(), vk._extension._LOAD_ERROR
assert vheat.__version__ == vk.__version__ == md.version("vheat-kernels")
torch.manual_seed(0)
worst = {}
for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 5e-6)):
    x = torch.randn(2, 13, 11, 17, dtype=dtype, requires_grad=True)
    E = torch.rand(13, 11, 17, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    out = {}
    for backend in ("cpu", "reference"):
        y = vk.heat_conduction(x, E, backend=backend)
        dx, dE = torch.autograd.grad(y, (x, E), dy)
        out[backend] = (y.detach(), dx, dE)
    err = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out["cpu"], out["reference"]))
    assert err <= tol, (dtype, err)
    worst[str(dtype)] = err
print(json.dumps(dict(files=[vk.__file__, vheat.__file__], config=resolve_config_path("vheat_tiny"),
                      requires=md.requires("vheat-kernels"), build=vk.build_info(), cpu_vs_reference=worst)))
"""


def test_packages_import_and_cpu_backend_matches_reference_outside_the_repo(installed):
    out = _run([installed["py"], "-c", CHECK], installed["cwd"], installed["timings"], "import + cpu check")
    report = json.loads(out.strip().splitlines()[-1])
    site = str(installed["venv"])
    assert all(f.startswith(site) for f in report["files"] + [report["config"]]), report  # not the checkout
    requires = {re.split(r"[<>=!; \[]", r)[0].lower() for r in report["requires"] if "extra ==" not in r}
    assert {"torch", "timm", "numpy", "pyyaml", "tqdm", "fvcore", "pillow"} <= requires, report["requires"]
    assert report["build"]["cuda"] is False  # VHEAT_BUILD_CUDA=0


def test_console_script_finds_shipped_config(installed):
    out = _run([installed["venv"] / "bin" / "vheat", "flops", "-c", "vheat_tiny"], installed["cwd"],
               installed["timings"], "vheat flops")
    match = re.search(r"vheat_tiny.*?([\d.]+) GFLOPs", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(4.94, abs=0.01), out  # fvcore, train mode, 224 (DESIGN.md)


def test_pip_show_lists_dependencies(installed):
    out = _run([installed["py"], "-m", "pip", "show", "vheat-kernels"], installed["cwd"], installed["timings"],
               "pip show")
    (requires,) = [line for line in out.splitlines() if line.startswith("Requires:")]
    assert {"timm", "torch", "fvcore"} <= {r.strip() for r in requires[len("Requires:"):].split(",")}, requires
