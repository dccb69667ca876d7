#!/usr/bin/env bash
# Optional extra: mmdetection 3.3.0 + mmsegmentation 1.2.2 on mmcv 2.1.0 with CPU ops.
#
# Installs into an overlay virtualenv (default .venv-mm) that sees every package of the main
# .venv through a .pth file, so the extra's pins (opencv, mmengine, pycocotools, ...) are
# added beside torch without touching the main environment; pip does not uninstall packages
# outside the overlay, it shadows them there if a pin ever needs another version.
#
# mmcv 2.1.0 has no wheel for torch 2.14; its sdist is built once with this recipe
# (setuptools<81, --no-build-isolation, -std=c++20, CPU ops only) and the wheel
# is cached under $VHEAT_WHEEL_CACHE (default ~/.cache/vheat-kernels/wheels: outside the
# clone, so fresh clones and CI reuse it), keyed by torch and Python version; later runs
# install the cached wheel in seconds; the build itself takes minutes (MAX_JOBS compiles at once).
#
#   scripts/install_mm_extra.sh                # build or reuse the wheel, install the extra
#   MAIN_VENV=.venv MM_VENV=.venv-mm MAX_JOBS=2 scripts/install_mm_extra.sh
#   .venv-mm/bin/python -m pytest tests/test_downstream_mm.py
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MAIN_VENV="${MAIN_VENV:-.venv}"
MM_VENV="${MM_VENV:-.venv-mm}"
MMCV_VERSION=2.1.0
export MAX_JOBS="${MAX_JOBS:-2}"

[ -x "$MAIN_VENV/bin/python" ] || { echo "error: $MAIN_VENV/bin/python not found (run scripts/setup_env.sh first)" >&2; exit 1; }
MAIN_SITE="$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TORCH_VERSION="$("$MAIN_VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
PY_TAG="$("$MAIN_VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
CACHE="${VHEAT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vheat-kernels/wheels}/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG"

# 1. Overlay venv: its own site-packages first, then the main venv's.
if [ ! -x "$MM_VENV/bin/python" ]; then
  "$("$MAIN_VENV/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv "$MM_VENV"
fi
MM_SITE="$("$MM_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$MAIN_SITE" > "$MM_SITE/_vheat_main_venv.pth"
"$MM_VENV/bin/python" -c 'import torch' || { echo "error: the overlay cannot import torch from $MAIN_SITE" >&2; exit 1; }
PIP=("$MM_VENV/bin/python" -m pip --disable-pip-version-check)

# 2. mmcv wheel: cached, or built from the sdist.
WHEEL="$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$WHEEL" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$WORK"
  tar -xzf "$WORK"/mmcv-"$MMCV_VERSION".tar.gz -C "$WORK"
  SRC="$WORK/mmcv-$MMCV_VERSION"
  # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
  grep -q -- '-std=c++17' "$SRC/setup.py" || { echo "error: mmcv setup.py no longer has -std=c++17; recipe out of date" >&2; exit 1; }
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  echo "building mmcv $MMCV_VERSION CPU ops against torch $TORCH_VERSION (MAX_JOBS=$MAX_JOBS; several minutes)"
  start=$(date +%s)
  MMCV_WITH_OPS=1 FORCE_CUDA=0 CFLAGS="-g0 -O2 -DNDEBUG -fwrapv" CXXFLAGS="-g0 -O2 -DNDEBUG -fwrapv" \
    "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$WORK/dist" "$SRC"
  echo "mmcv build took $(( $(date +%s) - start )) s"
  mkdir -p "$CACHE"
  built="$(ls "$WORK"/dist/mmcv-*.whl)"
  cp "$built" "$CACHE/.tmp-$(basename "$built")" && mv "$CACHE/.tmp-$(basename "$built")" "$CACHE/$(basename "$built")"
  WHEEL="$CACHE/$(basename "$built")"
fi
echo "mmcv wheel: $WHEEL"

# 3. The extra: the mmcv wheel plus pyproject.toml's [mm] list (mmengine, mmdet, mmseg pins,
# opencv headless: no GUI libs needed; mmseg needs ftfy and regex).
mapfile -t MM_EXTRA < <("$MAIN_VENV/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["mm"]))')
[ "${#MM_EXTRA[@]}" -gt 0 ] || { echo "error: cannot read [project.optional-dependencies].mm from pyproject.toml (tomllib: Python 3.11+)" >&2; exit 1; }
"${PIP[@]}" install "$WHEEL" "${MM_EXTRA[@]}"
"$MM_VENV/bin/python" - <<'EOF'
import mmcv, mmdet, mmseg, mmengine
from mmcv.ops import RoIAlign, nms  # compiled CPU ops
import torch
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
print(f"mmcv {mmcv.__version__} (ops ok), mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}")
EOF
