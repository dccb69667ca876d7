#!/usr/bin/env bash
# `make test-compat`: the package on the oldest torch / Triton it declares (pyproject.toml),
# the pair the GPU machine has (torch 2.11.0 + Triton 3.6.0). In a venv of its own
# (kept between runs), on a copy of the working tree (so the op library built
# against torch 2.11 never replaces the main build in vheat_kernels/):
#   1. install torch / torchvision / triton at the floor, the rest of requirements.txt as is;
#   2. build the op library (CPU kernels) against that torch;
#   3. the default unit tests (the Triton interpreter tests among them);
#   4. the quick Triton AOT resource check (spills / shared memory, sm_80 and sm_90) with
#      that Triton's compiler.
#   COMPAT_VENV=dir  the venv (default ~/.cache/vheat-kernels/venv-compat)
#   COMPAT_PYTEST_ARGS  extra pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The floor: keep in step with pyproject.toml and vheat_kernels.TORCH_FLOOR / TRITON_FLOOR.
TORCH_PIN=torch==2.11.0
TORCHVISION_PIN=torchvision==0.26.0
TRITON_PIN=triton==3.6.0
# Triton 3.6's interpreter turns a 1-element array into a loop bound with int(), which
# numpy 2.4 refuses ("only 0-dimensional arrays can be converted"; Triton 3.8 squeezes
# first): every interpreted kernel with a runtime loop bound failed. Only the interpreter
# (tests) is affected, not GPU launches.
NUMPY_PIN="numpy<2.4"
# Outside the clone (like the mm extra's wheel cache): fresh clones and CI reuse it.
VENV="${COMPAT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vheat-kernels/venv-compat}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac  # used from inside $SRC too
SRC=build/compat/src
start=$(date +%s)
say() { echo "== test-compat [$(( $(date +%s) - start )) s]: $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha"
want=$( (cat requirements.txt; echo "$TORCH_PIN $TORCHVISION_PIN $TRITON_PIN $NUMPY_PIN") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing $TORCH_PIN $TORCHVISION_PIN $TRITON_PIN $NUMPY_PIN and requirements.txt into $VENV"
  grep -vE '^(torch|torchvision|triton|numpy)([=<>~ ]|$)' requirements.txt > "$VENV/requirements-rest.txt"
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN" "$TRITON_PIN" "$NUMPY_PIN" \
    -r "$VENV/requirements-rest.txt"
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" - <<'EOF'
import torch, triton
print(f"test-compat: torch {torch.__version__}, triton {triton.__version__}")
EOF

say "copying the working tree to $SRC"
rm -rf "$SRC"
mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard | grep -zv '^build/' | tar --null -T - -cf - | tar -xf - -C "$SRC"

say "building the op library against that torch (CPU kernels)"
(cd "$SRC" && VHEAT_BUILD_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" "$VENV/bin/python" setup.py -q build_ext --inplace \
  > build.log 2>&1) || { tail -40 "$SRC/build.log"; echo "test-compat: the build failed" >&2; exit 1; }
(cd "$SRC" && "$VENV/bin/python" -c \
  "import vheat_kernels as vk; assert vk.extension_available(), 'op library failed to load'; print('build_info:', vk.build_info())")

say "default unit tests"
# shellcheck disable=SC2086
(cd "$SRC" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider ${COMPAT_PYTEST_ARGS:-})

say "quick Triton AOT resource check (sm_80, sm_90)"
(cd "$SRC" && "$VENV/bin/python" tools/triton_resources.py --quick)
say "passed"
