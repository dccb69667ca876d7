#!/usr/bin/env bash
# Configures and builds the vheat op library with CMake against the LibTorch of .venv, then
# runs the C++ tests (CTest): the CPU op through the dispatcher and the CUDA kernels on the
# host block emulator. CUDA kernels are off unless VHEAT_BUILD_CUDA=1|auto (nvcc for two
# architectures adds minutes on a 2-core machine). Build folder: build/cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
prefix=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
cuda_args=()
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
if [ -n "${CUDA_HOME:-}" ]; then
  # find_package(Torch) of a CUDA torch build looks for the toolkit even for a CPU build.
  cuda_args+=("-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME" "-DCUDAToolkit_ROOT=$CUDA_HOME" "-DCMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc")
fi
cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DVHEAT_BUILD_CUDA="${VHEAT_BUILD_CUDA:-0}" "${cuda_args[@]}"
cmake --build build/cmake -j "${CMAKE_JOBS:-2}"
ctest --test-dir build/cmake --output-on-failure
