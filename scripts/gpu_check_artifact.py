"""The prebuilt op library that `make gpu-check` can use instead of compiling in the GPU window.

    python scripts/gpu_check_artifact.py build DEST     # with the GPU machine's torch and Python
    python scripts/gpu_check_artifact.py install DEST   # exit 0: installed into vheat_kernels/

``build`` compiles the op library (CPU + CUDA kernels, TORCH_CUDA_ARCH_LIST, default 9.0)
in a copy of the working tree, with the running Python and torch, and writes DEST/<the
.so> and DEST/manifest.json (torch, CUDA, Python ABI, arch list, size, sha256). It must be
run with the Python and torch of the machine that will load it: the library links against
that libtorch and carries that Python's ABI tag (`make build-gpu-check-artifact` makes such
a venv: Python 3.12, torch 2.11.0+cu130, the H100 machine's pair).

``install`` copies it into vheat_kernels/ (atomically) only when the manifest matches the
running torch, Python and sources (csrc/, setup.py) and the file's sha256 matches; otherwise it says why and exits 1,
and gpu_check.sh builds instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 60 * 1024 * 1024  # what the device tool carries with the working tree, with room to spare


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _runtime() -> dict:
    """What a built library must match: torch, its CUDA, the Python ABI, and the sources."""
    import torch

    return dict(torch=torch.__version__, cuda=torch.version.cuda, soabi=sysconfig.get_config_var("SOABI"),
                sources=_sources_sha256())


def _sources_sha256() -> str:
    """One hash of the op library's sources (csrc/ and setup.py): a stale build is refused."""
    h = hashlib.sha256()
    for path in sorted([ROOT / "setup.py", *(p for p in (ROOT / "csrc").rglob("*") if p.is_file())]):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build(dest: Path) -> int:
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")
    with tempfile.TemporaryDirectory() as tmp:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               check=True, capture_output=True).stdout.decode().split("\0")
        for name in filter(None, files):
            if (ROOT / name).is_file() and not name.startswith("build/"):
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, Path(tmp) / name)
        env = dict(os.environ, VHEAT_BUILD_CUDA="1", TORCH_CUDA_ARCH_LIST=arch,
                   MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 2)))
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp, env=env, check=True)
        built = sorted((Path(tmp) / "vheat_kernels").glob("_C*.so"))
        if len(built) != 1:
            print(f"gpu_check_artifact: expected one vheat_kernels/_C*.so, found {built}", file=sys.stderr)
            return 1
        so = built[0]
        size = so.stat().st_size
        if size > MAX_BYTES:
            print(f"gpu_check_artifact: {so.name} is {size / 2**20:.1f} MiB, over the "
                  f"{MAX_BYTES / 2**20:.0f} MiB the GPU machine's working tree may carry", file=sys.stderr)
            return 1
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(so, dest / (so.name + ".tmp"))
        os.replace(dest / (so.name + ".tmp"), dest / so.name)
    manifest = dict(_runtime(), file=so.name, arch_list=arch, bytes=size, sha256=_sha256(dest / so.name))
    (dest / "manifest.json.tmp").write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(dest / "manifest.json.tmp", dest / "manifest.json")
    print(f"gpu_check_artifact: {dest / so.name} ({size / 2**20:.1f} MiB) for {manifest}")
    return 0


def install(src: Path) -> int:
    manifest_path = src / "manifest.json"
    if not manifest_path.exists():
        print(f"gpu_check_artifact: no prebuilt op library in {src} (make build-gpu-check-artifact makes one)")
        return 1
    manifest = json.loads(manifest_path.read_text())
    here = _runtime()
    wrong = [f"{k} {manifest.get(k)} (here {v})" for k, v in here.items() if manifest.get(k) != v]
    if wrong:
        print(f"gpu_check_artifact: {src} was built for another setup: {', '.join(wrong)}; building instead")
        return 1
    so = src / manifest["file"]
    if not so.exists() or _sha256(so) != manifest["sha256"]:
        print(f"gpu_check_artifact: {so} is missing or does not match its manifest's sha256; building instead")
        return 1
    target = ROOT / "vheat_kernels" / manifest["file"]
    shutil.copy2(so, str(target) + ".tmp")
    os.replace(str(target) + ".tmp", target)
    print(f"gpu_check_artifact: installed {so} ({manifest['arch_list']}, torch {manifest['torch']})")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("build", "install"):
        print(__doc__, file=sys.stderr)
        return 2
    return (build if argv[0] == "build" else install)(Path(argv[1]).resolve())


if __name__ == "__main__":
    sys.exit(main())
