#!/usr/bin/env bash
# `make build-gpu-check-artifact`: the op library for the GPU machine (H100, sm_90; Python
# 3.12, torch 2.11.0+cu130), built here with nvcc so `make gpu-check` spends no GPU time
# compiling. Builds in a venv of that Python and torch (.venv-gpu-artifact, kept), writes
# build/gpu_check_artifact/{_C.cpython-312-*.so,manifest.json}. Send it with the working
# tree (the device tool's carry: ["build/gpu_check_artifact"]); gpu_check.sh installs it
# when torch, Python and the sources match. Takes minutes (an nvcc build of every kernel).
#   ARTIFACT_PYTHON  the Python to build for (default python3.12)
#   TORCH_CUDA_ARCH_LIST  default 9.0
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=.venv-gpu-artifact
TORCH_PIN=torch==2.11.0  # the GPU machine's torch (docs/gpu-check.md)
PY=${ARTIFACT_PYTHON:-python3.12}
if ! "$PY" -c "import sys" 2>/dev/null; then
  # A pyenv shim that is on PATH but not selected: take pyenv's 3.12 directly.
  PY=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
fi
[ -n "$PY" ] && "$PY" -c "import sys" 2>/dev/null ||
  { echo "build-gpu-check-artifact: no Python 3.12 found (set ARTIFACT_PYTHON)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$TORCH_PIN" "setuptools>=77,<81" wheel ninja numpy
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} "$VENV/bin/python" scripts/gpu_check_artifact.py build build/gpu_check_artifact
