#!/usr/bin/env bash
# Creates .venv with pinned dependencies and builds the op library. Idempotent: reruns
# only redo what changed (pip skips satisfied requirements, ninja rebuilds changed sources).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
export MAX_JOBS=${MAX_JOBS:-2}
# Whether the CUDA kernels are built is setup.py's decision (VHEAT_BUILD_CUDA: default auto =
# only where a GPU is visible, 1 forces, 0 skips; README "Install"); a CUDA build takes
# minutes (docs/cuda.md).
# Build outside the package, then rename into place: overwriting a loaded .so in place
# crashes processes that have it mapped.
if ! .venv/bin/python setup.py -q build_ext --build-lib build/lib > build.log 2>&1; then
  tail -40 build.log
  echo "setup_env: building the op library failed (full log: build.log)" >&2
  exit 1
fi
for so in build/lib/vheat_kernels/_C*.so; do
  dest=vheat_kernels/$(basename "$so")
  if ! cmp -s "$so" "$dest"; then
    cp "$so" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  fi
done
.venv/bin/python -c "import vheat_kernels as vk; assert vk.extension_available(), 'op library failed to build'; print('vheat_kernels op library:', vk.build_info())"
