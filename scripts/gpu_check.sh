#!/usr/bin/env bash
# GPU acceptance run (`make gpu-check`): on a machine with one CUDA GPU, builds the op
# library with the CUDA kernels for that GPU's architecture, then runs the gpu-marked
# tests, the GPU benchmark and a vHeat-T training step + inference per backend
# (scripts/gpu_check.py), prints PASS/FAIL per part and writes build/gpu_check/
# gpu_check.json + gpu_check.md. Designed to finish in under 8 minutes on an H100 / A100.
# Without a GPU it says so and exits 0 having done nothing.
#   GPU_CHECK_OUT=dir   results folder (default build/gpu_check)
#   GPU_CHECK_BUDGET_S  seconds for everything after the build (default 470 minus the build)
#   GPU_CHECK_NO_BUILD=1  use the op library as built (skip the build)
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
out=${GPU_CHECK_OUT:-build/gpu_check}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
  echo "gpu-check: no GPU (nvidia-smi is missing or lists no device); nothing was checked." \
       "Run it on a machine with one CUDA GPU."
  exit 0
fi
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0 | tr -d ' ')
echo "gpu-check: $(nvidia-smi --query-gpu=name --format=csv,noheader -i 0), compute capability $cap"
mkdir -p "$out"

build_status=PASS build_detail=""
if [ "${GPU_CHECK_NO_BUILD:-0}" != 1 ]; then
  # Only this GPU's architecture: half the nvcc time of the default list.
  # setuptools skips an extension whose output is newer than its sources, which would keep
  # a CPU-only build; ninja's objects stay, so this only relinks what did not change.
  rm -f build/lib/vheat_kernels/_C*.so
  echo "== build: VHEAT_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=$cap bash scripts/setup_env.sh"
  if ! VHEAT_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$cap" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      bash scripts/setup_env.sh > "$out/build.log" 2>&1; then
    build_status=FAIL build_detail="setup_env.sh failed (see $out/build.log)"
    tail -20 "$out/build.log"
  fi
else
  build_status="not run"
fi
build_s=$(( $(date +%s) - start ))
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu-check: FAIL (no .venv: the build did not create it; see $out/build.log)"; exit 1; }
budget=${GPU_CHECK_BUDGET_S:-$(( 470 - build_s ))}
[ "$budget" -ge 60 ] || budget=60
exec "$PY" scripts/gpu_check.py --out "$out" --budget-s "$budget" --build-status "$build_status" \
  --build-seconds "$build_s" --build-detail "$build_detail"
