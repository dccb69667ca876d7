# Every target does its own setup (scripts/setup_env.sh is idempotent and fast when done).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup build demo selfcheck bench bench-suite bench-quick test test-unit test-slow test-timm test-compat cuda-check cmake-test triton-aot bytes-model test-mm test-install build-cuda gpu-check build-gpu-check-artifact clean

setup:
	bash scripts/setup_env.sh

build: setup

# The main job: correctness self-check, HCO kernel benchmark, then train + evaluate a
# small vHeat on the embedded digits data with the fused CPU kernel.
demo: setup
	$(PY) -m vheat_kernels.selfcheck
	$(PY) benchmarks/bench_hco.py
	$(PY) -m vheat train -c demo_digits

selfcheck: setup
	$(PY) -m vheat_kernels.selfcheck

bench: setup
	$(PY) benchmarks/bench_hco.py

# Full suite (kernels, whole models vs official and timm baselines, resolution, memory);
# writes benchmarks/results/*.json, PNG plots and docs/benchmarks.md (its run time: docs/benchmarks.md).
bench-suite: setup
	$(PY) -m benchmarks --threads 1

bench-quick: setup
	$(PY) benchmarks/bench_hco.py --quick --json benchmarks/results/hco_cpu_quick.json

# What CI runs (.ci/run): unit tests, compile-only checks of the GPU kernels, the LibTorch
# (CMake) build, the mm extra (its first run builds mmcv from source, later runs reuse the wheel) and
# a user's pip install from the sdist.
test: test-unit test-timm cuda-check cmake-test test-mm test-install test-compat

test-unit: setup
	$(PYTEST) -q

test-slow: setup
	$(PYTEST) -q -m slow

# timm's own tests/test_models.py on vheat_small / vheat_base (vheat_tiny runs in test-unit),
# with VHEAT_ONEDNN_LINEAR unset, 0 and always.
test-timm: setup
	$(PYTEST) -q -m slow tests/test_timm_own_tests.py

# The declared floor, torch 2.11.0 + Triton 3.6.0, in .venv-compat: build, default unit tests
# (Triton interpreter tests included), quick Triton AOT check (scripts/test_compat.sh).
test-compat:
	bash scripts/test_compat.sh

# nvcc for sm_80 / sm_90 with ptxas -v: fails on spills or shared memory over the limit.
cuda-check: setup
	$(PY) tools/cuda_resources.py --check
	$(PY) tools/triton_resources.py --quick

cmake-test: setup
	bash scripts/cmake_test.sh

# Every Triton kernel configuration for sm_80/sm_90 (~1000 builds; Triton caches them for re-runs).
triton-aot: setup
	$(PY) tools/triton_resources.py --jobs 2

bytes-model: setup
	$(PY) benchmarks/bytes_model.py --update

# Optional mm extra (mmcv 2.1.0 CPU ops built from source, wheel cached in
# ~/.cache/vheat-kernels/wheels): one Mask R-CNN and one UperNet training step + inference.
test-mm: setup
	bash scripts/install_mm_extra.sh
	.venv-mm/bin/python -m pytest -q tests/test_downstream_mm.py

# sdist -> wheel (--no-build-isolation, CPU-only) in a fresh temporary venv -> installed
# packages and the `vheat` command checked from outside the clone (tests/test_install.py).
test-install: setup
	$(PYTEST) -q -s -m slow tests/test_install.py

# GPU acceptance run: offline, on the Python that is there (no venv, no pip), <= 8 min on an
# H100 from a bare checkout, <= 5 min with the prebuilt op library (README "GPU acceptance
# run"). Without a GPU: "no GPU" and exit 0; GPU_CHECK_DRY_RUN=1 runs every step on the CPU.
gpu-check:
	bash scripts/gpu_check.sh

# The op library for the GPU machine (Python 3.12, torch 2.11.0+cu130, sm_90), built here.
build-gpu-check-artifact:
	bash scripts/build_gpu_check_artifact.sh

build-cuda: setup
	VHEAT_BUILD_CUDA=1 MAX_JOBS=2 $(PY) setup.py build_ext --inplace

clean:
	rm -rf build dist *.egg-info vheat_kernels/_C*.so
