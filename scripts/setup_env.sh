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
# CUDA kernels are built by default only where a GPU driver is present: a CUDA build
# takes ~7 minutes on 2 cores (docs/cuda.md). VHEAT_BUILD_CUDA=1 forces it.
export VHEAT_BUILD_CUDA=${VHEAT_BUILD_CUDA:-$(command -v nvidia-smi >/dev/null 2>&1 && echo auto || echo 0)}
.venv/bin/python setup.py -q build_ext --inplace 2>&1 | grep -vE "^(running|copying|creating|\[[0-9]+/[0-9]+\])" || true
.venv/bin/python -c "import vheat_kernels as vk; assert vk.extension_available(), 'op library failed to build'; print('vheat_kernels op library:', vk.build_info())"
