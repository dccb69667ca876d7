"""Build and resource checks of the kernels, run from a checkout (not installed).

No GPU needed: ``python tools/cuda_resources.py --check`` (nvcc + ptxas of the CUDA kernels,
the CUDA launch planner on vHeat's shapes) and ``python tools/triton_resources.py --quick``
(ahead-of-time Triton builds sized by ptxas, ``triton_aot``) are the gates of ``make
cuda-check``; ``triton_resources.py`` also regenerates vheat_kernels/triton/spill_tables.py
and the plane table of docs/triton.md.
"""
