#!/usr/bin/env bash
# GPU acceptance run (`make gpu-check`): offline, on the Python that is there ($PYTHON, else
# python3); it never creates a venv or calls pip. Steps and budget: scripts/gpu_check.py and
# docs/gpu-check.md.
#   1. the op library with CUDA kernels for this GPU: the prebuilt one in
#      $GPU_CHECK_ARTIFACT (default build/gpu_check_artifact, `make build-gpu-check-artifact`)
#      when it was built for this torch and Python, else built here (setup.py build_ext
#      --inplace: no build isolation, no downloads, this GPU's architecture only, all cores);
#   2. scripts/gpu_check.py: correctness, training step, timing, whole model, tuning.
# Without a GPU it says so and exits 0. GPU_CHECK_DRY_RUN=1 runs every step on CPU tensors
# with tiny shapes instead (the op library as built), which the default tests do.
#   GPU_CHECK_OUT=dir       results folder (default build/gpu_check)
#   GPU_CHECK_BUDGET_S      seconds for the steps after the build (default 420 minus the build)
#   GPU_CHECK_NO_BUILD=1    use the op library as it is
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python3}
out=${GPU_CHECK_OUT:-build/gpu_check}
artifact=${GPU_CHECK_ARTIFACT:-build/gpu_check_artifact}
dry=${GPU_CHECK_DRY_RUN:-0}

if [ "$dry" != 1 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
    echo "gpu-check: no GPU (nvidia-smi is missing or lists no device); nothing was checked." \
         "Run it on a machine with one CUDA GPU (GPU_CHECK_DRY_RUN=1 tries every step on the CPU)."
    exit 0
  fi
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0 | tr -d ' ')
  echo "gpu-check: $(nvidia-smi --query-gpu=name --format=csv,noheader -i 0), compute capability $cap, $("$PY" --version)"
fi
mkdir -p "$out"

build="op library as built"
if [ "$dry" = 1 ]; then
  build="dry run: op library as built"
elif [ "${GPU_CHECK_NO_BUILD:-0}" = 1 ]; then
  build="GPU_CHECK_NO_BUILD=1: op library as built"
elif "$PY" scripts/gpu_check_artifact.py install "$artifact"; then
  build="prebuilt $artifact"
else
  echo "== build: VHEAT_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=$cap $PY setup.py build_ext --inplace (log: $out/build.log)"
  # setuptools skips an extension whose output is newer than its sources, which would keep
  # a CPU-only build: remove it first (ninja's objects stay, so unchanged ones only relink).
  rm -f vheat_kernels/_C*.so
  if VHEAT_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$cap" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
    build="built here in $(( $(date +%s) - start )) s"
  else
    tail -30 "$out/build.log"
    echo "gpu-check: FAIL (building the op library failed; see $out/build.log)"
    exit 1
  fi
fi
echo "== op library: $build"
budget=${GPU_CHECK_BUDGET_S:-$(( 420 - ($(date +%s) - start) ))}
[ "$budget" -ge 60 ] || budget=60
dry_flag=()
[ "$dry" = 1 ] && dry_flag=(--dry-run)
exec "$PY" scripts/gpu_check.py --out "$out" --budget-s "$budget" --build "$build" "${dry_flag[@]}"
